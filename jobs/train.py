"""``msc train SHARDS --out MODEL_DIR --workers N``: fit the 3D CNN with Ray Train, then evaluate it.

Ray Train's TensorflowTrainer starts N workers and sets ``TF_CONFIG``; each
worker builds a ``MultiWorkerMirroredStrategy``, streams its own shard files
(balanced by train windows, see :class:`msc_core.training.ShardPlan`) as
compact codes and runs :func:`msc_core.training.fit`. Rank 0 reports a
checkpoint every epoch; with ``--max-failures`` a failed worker makes Ray
restart the group from the last checkpoint, and ``--resume`` continues a run
that stopped (its checkpoints live in ``MODEL_DIR.ray/``, or ``--storage``).

The driver only reads the shards' label/split columns to plan the run; when
training ends it writes the best-validation-accuracy weights as an msc model
directory with ``history.csv``, the training curves and the test-split
evaluation (:mod:`msc_core.evaluation`).

Also runnable as ``python -m jobs.train ...`` (for ``ray job submit``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from jobs.console import progress
from jobs.console import summary as summary_line
from jobs.raylib import add_ray_arguments, cluster_cpus, init_ray, largest_node_cpus
from msc_core.errors import InputError, OutputExistsError
from msc_core.training import TrainSettings

log = logging.getLogger(__name__)

RUN_NAME = "msc-train"
CHECKPOINT_INDEX = "checkpoint_manager_snapshot.json"  # Ray Train's list of finished checkpoints, in RUN_NAME/


def parse_widths(text: str) -> tuple[int, int, int]:
    """``"32,64,128"`` -> (32, 64, 128)."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be three integers like 32,64,128, not {text!r}") from None
    if len(widths) != 3 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be three positive integers like 32,64,128, not {text!r}")
    return widths


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc train``."""
    parser = subparsers.add_parser(
        "train", help="train the 3D CNN on shards with Ray Train, then evaluate it on the test split",
        description="Train data-parallel over --workers Ray workers (MultiWorkerMirroredStrategy, explicit "
                    "training loop), checkpointing every epoch, and write an msc model directory with its "
                    "history, training curves and test-split evaluation. Defaults are the paper's recipe.")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``msc train`` arguments (shared with ``python -m jobs.train``)."""
    defaults = TrainSettings()
    parser.add_argument("shards", metavar="SHARDS",
                        help="featurized dataset: DIR or URI with shards/part-*.parquet")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR",
                        help="model directory to create, local or URI (must not exist)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"most epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"windows per step per worker (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help=f"initial Adam learning rate (default {defaults.learning_rate})")
    parser.add_argument("--widths", type=parse_widths, default=defaults.widths, metavar="A,B,C",
                        help="filters of the three Conv3D layers (default 32,64,128)")
    parser.add_argument("--bn-momentum", type=float, default=defaults.batchnorm_momentum, metavar="M",
                        help=f"BatchNormalization momentum (default {defaults.batchnorm_momentum}, the paper's; "
                             "0.9 for short runs on little data)")
    parser.add_argument("--patience", type=int, default=defaults.early_stopping_patience,
                        help=f"early-stopping patience in epochs (default {defaults.early_stopping_patience})")
    parser.add_argument("--lr-patience", type=int, default=defaults.lr_patience,
                        help=f"epochs before halving the learning rate on a plateau (default {defaults.lr_patience})")
    parser.add_argument("--no-class-weights", action="store_true", help="do not balance the classes in the loss")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run kept in the storage path")
    parser.add_argument("--storage", default=None, metavar="DIR",
                        help="where Ray Train keeps checkpoints (default MODEL_DIR.ray; shared storage on clusters)")
    parser.add_argument("--max-failures", type=int, default=3,
                        help="worker failures to recover from by restarting from the last checkpoint (default 3)")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--head-from", default=None, metavar="MODEL_DIR",
                        help="keep this model's convolutions and learn only a new dense head for the shards' classes "
                             "(minutes on a CPU instead of hours; --widths, --workers and --resume do not apply)")
    parser.add_argument("--init-from", default=None, metavar="MODEL_DIR",
                        help="start every weight from this model (same features and classes) and train the "
                             "whole network: fine-tuning; --widths is taken from it")
    add_ray_arguments(parser)


def train(shards: str, out: str, settings: TrainSettings, *, workers: int = 1, use_gpu: bool = False,
          max_failures: int = 3, resume: bool = False, storage: str | None = None,
          init_from: str | None = None, on_epoch_end: Callable | None = None):
    """Train with Ray Train, then write the model directory with its evaluation.

    Parameters
    ----------
    shards : str
        Dataset directory (or URI) holding ``shards/part-*.parquet``.
    out : str
        Model directory to create: a local path, or a URI (built locally, then uploaded).
    settings : TrainSettings
    workers : int
        Ray Train workers; each reserves an equal share of the CPUs (:func:`cpus_per_worker`)
        and one GPU with ``use_gpu``.
    use_gpu : bool
    max_failures : int
        Worker-group failures Ray recovers from.
    resume : bool
        Continue from the latest checkpoint in the storage path (which must exist).
    storage : str or None
        Ray Train storage path (local or URI); default ``<out>.ray``.
    init_from : str or None
        A model directory whose weights every weight starts from (fine-tuning); it must read
        the shards' features and name the shards' classes in the same order. Its widths
        replace ``settings.widths``.
    on_epoch_end : callable(msc_core.training.EpochEnd) or None
        Extra per-worker hook after each epoch (it is pickled to the workers).

    Returns
    -------
    msc_core.model.MscModel
        The saved model.

    Raises
    ------
    OutputExistsError
        ``out`` exists.
    InputError
        The storage path contradicts ``resume``, the shards lack val or test windows,
        they cannot be split over ``workers``, or ``init_from`` names other classes.
    ray.train.TrainingFailedError
        Training failed more than ``max_failures`` times (rerun with ``resume``).
    """
    import numpy as np
    import ray.train
    import ray.util.queue
    from pyarrow.fs import FileType
    from ray.train.tensorflow import TensorflowTrainer

    from msc_core.evaluation import evaluate_shards, write_history
    from msc_core.model import METADATA_FILE, build_model, load_model_dir, save_model_dir
    from msc_core.shards import list_shards, resolve_filesystem
    from msc_core.storage import is_uri
    from msc_core.storage import exists, output_dir
    from msc_core.training import Checkpoint, ShardPlan

    if exists(out):
        raise OutputExistsError(f"{out} already exists; choose a new model directory")
    storage_path = storage or (f"{out}.ray" if is_uri(out) else str(Path(f"{out}.ray").resolve()))
    filesystem, inner = resolve_filesystem(storage_path)
    earlier_run = filesystem.get_file_info(f"{inner}/{RUN_NAME}").type != FileType.NotFound
    if resume and not earlier_run:
        raise InputError(f"nothing to resume: no run in {storage_path}")
    if resume:
        epochs = finished_checkpoints(storage_path)
        if epochs:
            log.info("resuming the run in %s after epoch %d", storage_path, epochs[-1])
        else:
            log.warning("the run in %s stopped before its first checkpoint was finished: "
                        "training starts again from epoch 1", storage_path)
    if not resume and earlier_run:
        raise InputError(f"{storage_path}/{RUN_NAME} holds an earlier run; pass --resume to continue it or delete it")
    if workers < 1:
        raise InputError("--workers must be at least 1")
    paths = list_shards(shards)
    plan = ShardPlan.scan(paths)
    for split in ("val", "test"):
        if not plan.totals(split).sum():
            raise InputError(f"{shards}: the {split} split holds no labelled windows (needed for "
                             f"{'early stopping' if split == 'val' else 'the evaluation'})")
    parts = plan.assign(workers)
    steps = plan.steps_per_epoch(parts, settings.batch_size)
    classes = plan.classes()
    class_weights = plan.class_weights() if settings.balance_classes else np.ones(len(classes), np.float32)
    initial = start_id = None
    if init_from is not None:
        start = load_model_dir(init_from, expected_config=plan.config)
        if start.labels != tuple(classes):
            raise InputError(f"--init-from {init_from}: its classes {list(start.labels)} must be the shards' "
                             f"classes {classes}, in this order")
        settings = dataclasses.replace(settings, widths=tuple(start.metadata["widths"]))
        initial, start_id = start.keras_model.get_weights(), start.model_id
    log.info("training on %d files, %s train windows per class, %d steps per epoch on each of %d workers",
             len(paths), plan.totals("train").tolist(), steps, workers)
    epochs_done = ray.util.queue.Queue()  # rank 0 puts each epoch's metrics; the driver shows them
    trainer = TensorflowTrainer(
        _worker_loop,
        train_loop_config={"config": plan.config, "settings": settings, "parts": parts, "steps": steps,
                           "classes": classes, "class_weights": class_weights, "on_epoch_end": on_epoch_end,
                           "epochs_done": epochs_done, "initial": initial},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker(workers)}),
        run_config=ray.train.RunConfig(
            name=RUN_NAME, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    try:
        with _EpochProgress(epochs_done, epochs=settings.epochs):
            result = trainer.fit()
    except ray.train.TrainingFailedError:
        log.error("training failed; its checkpoints stay in %s: rerun with --resume to continue", storage_path)
        raise
    finally:
        epochs_done.shutdown()
    with result.checkpoint.as_directory() as directory:
        final = Checkpoint.load(directory)
    model = build_model(plan.config, widths=settings.widths, batchnorm_momentum=settings.batchnorm_momentum,
                        outputs=len(classes))
    model.set_weights(final.best_accuracy)
    progress = final.progress
    with output_dir(out, last=METADATA_FILE) as local_out:  # model.json last: a URI model is whole once it is there
        saved = save_model_dir(model, plan.config, local_out, source="trained", labels=classes, extra={
            "shards": shards, "settings": dataclasses.asdict(settings), "workers": workers,
            "epochs_run": progress.epoch, "best_epoch": progress.best_accuracy_epoch,
            "best_val_accuracy": progress.best_val_accuracy, "stopped_early": progress.stopped_early,
            "resumed_at": progress.resumed_at, "train_windows": plan.totals("train").tolist(),
            "init_from": start_id})
        write_history(progress.history, local_out)
        evaluate_shards(saved, paths, split="test").write(local_out)
    return saved


def finished_checkpoints(storage_path: str) -> list[int]:
    """Epochs (ascending) of the checkpoints Ray Train has finished and listed under ``storage_path``.

    A checkpoint directory can exist before it is listed (while it uploads);
    a resume or a restart after a failure starts from the last listed one.
    A list caught mid-write counts as empty.
    """
    from pyarrow.fs import FileType

    from msc_core.shards import resolve_filesystem

    filesystem, inner = resolve_filesystem(storage_path)
    index = f"{inner}/{RUN_NAME}/{CHECKPOINT_INDEX}"
    if filesystem.get_file_info(index).type == FileType.NotFound:
        return []
    with filesystem.open_input_stream(index) as stream:
        try:
            snapshot = json.loads(stream.read())
        except json.JSONDecodeError:
            return []
    return sorted(result["metrics"]["epoch"] for result in snapshot["checkpoint_results"])


class _EpochProgress:
    """A progress bar on the driver, one step per epoch, fed by rank 0 through a Ray queue.

    Ray Train's own logs (and the workers' output) reach the console only with ``-v``; this is what
    the user sees instead: epochs done, ETA, and the last epoch's validation loss and accuracy.
    """

    def __init__(self, queue, *, epochs: int):
        self._queue, self._epochs = queue, epochs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _follow(self) -> None:
        from ray.util.queue import Empty

        with progress(total=self._epochs, unit="epochs", desc="train") as bar:
            while not self._stop.is_set():
                try:
                    metrics = self._queue.get(timeout=1.0)
                except Empty:
                    continue
                except Exception:  # the queue actor is gone (the run is ending): nothing more to show
                    return
                bar.set_postfix_str(f"val_loss {metrics['val_loss']:.3f}, val_accuracy {metrics['val_accuracy']:.3f}",
                                    refresh=False)
                bar.update(int(metrics["epoch"]) - bar.n)


def cpus_per_worker(workers: int) -> int:
    """CPUs each worker reserves: an equal share of the cluster, at most one node's worth, at least 1.

    TensorFlow's kernels are multi-threaded; Ray limits a worker's threads to the
    CPUs it reserves, so one worker on a 2-CPU machine should reserve both.
    """
    return int(max(1, min(cluster_cpus() // workers, largest_node_cpus())))


def _worker_loop(loop_config: dict) -> None:
    """One Ray Train worker: build the strategy, restore, train, report a checkpoint every epoch."""
    import ray.train
    import tensorflow as tf

    from msc_core.shards import tf_dataset
    from msc_core.training import Checkpoint, fit

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    config, settings = loop_config["config"], loop_config["settings"]
    files, steps = loop_config["parts"][rank], loop_config["steps"]
    class_weights = loop_config["class_weights"]
    extra_hook = loop_config["on_epoch_end"]
    restore = None
    if ray.train.get_checkpoint() is not None:
        with ray.train.get_checkpoint().as_directory() as directory:
            restore = Checkpoint.load(directory)

    def train_data(epoch: int):
        # Every worker holds at least steps * batch_size train windows, so these batches are all full.
        return tf_dataset(files, config, split="train", batch_size=settings.batch_size, classes=loop_config["classes"],
                          shuffle_seed=(settings.seed * 1_000_003 + epoch) * 1009 + rank,
                          shuffle_buffer=settings.shuffle_buffer).take(steps)

    def val_data():
        return tf_dataset(files, config, split="val", batch_size=settings.batch_size, classes=loop_config["classes"])

    def report(end) -> None:
        metrics = {**end.progress.history[-1], "peak_rss_mb": end.peak_rss_mb}
        if rank == 0:
            loop_config["epochs_done"].put(metrics)
            with tempfile.TemporaryDirectory() as directory:
                end.checkpoint.save(directory)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
        if extra_hook is not None:
            extra_hook(end)

    fit(config, settings, strategy=strategy, rank=rank, workers=workers, train_data=train_data,
        val_data=val_data, class_weights=class_weights, initial=loop_config["initial"], restore=restore,
        on_epoch_end=report)


def train_head(shards: str, out: str, settings: TrainSettings, *, base: str):
    """Learn a new dense head over ``base``'s frozen convolutions, then write the model directory with its evaluation.

    One Ray task per shard file computes the pooled convolutional features of its
    labelled windows (:func:`msc_core.training.pooled_features`); the head is then
    fitted in this process (:func:`msc_core.training.fit_head`) on the train split,
    with early stopping on the val split, and evaluated on the test split.

    Parameters
    ----------
    shards : str
        Dataset directory (or URI).
    out : str
        Model directory to create (local path or URI).
    settings : TrainSettings
    base : str
        The model directory whose convolutions are kept.

    Returns
    -------
    msc_core.model.MscModel
    """
    import numpy as np
    import ray

    from msc_core.evaluation import evaluate_shards, write_history
    from msc_core.model import METADATA_FILE, load_model_dir, save_model_dir
    from msc_core.shards import list_shards
    from msc_core.storage import exists, output_dir
    from msc_core.training import SPLITS, ShardPlan, fit_head, pooled_features

    if exists(out):
        raise OutputExistsError(f"{out} already exists; choose a new model directory")
    paths = list_shards(shards)
    plan = ShardPlan.scan(paths)
    classes = plan.classes()
    model = load_model_dir(base, expected_config=plan.config)

    @ray.remote(num_cpus=1)
    def pool(path: str) -> dict:
        found = load_model_dir(base, expected_config=plan.config)
        return pooled_features(found, [path], classes=classes)

    log.info("pooling the features of %d shard files through %s's convolutions", len(paths), model.model_id)
    parts = ray.get([pool.remote(path) for path in paths])
    data = {split: tuple(np.concatenate([part[split][i] for part in parts]) for i in range(2)) for split in SPLITS}
    for split in ("val", "test"):
        if not len(data[split][1]):
            raise InputError(f"{shards}: the {split} split holds no labelled windows")
    full, history = fit_head(model, train=data["train"], val=data["val"], classes=classes, settings=settings)
    with output_dir(out, last=METADATA_FILE) as local_out:  # model.json last: a URI model is whole once it is there
        saved = save_model_dir(full, plan.config, local_out, source="trained", labels=classes, extra={
            "shards": shards, "settings": dataclasses.asdict(settings), "head_from": model.model_id,
            "epochs_run": len(history["loss"]), "best_epoch": history["best_epoch"],
            "best_val_accuracy": history["val_accuracy"][history["best_epoch"] - 1],
            "train_windows": np.bincount(data["train"][1], minlength=len(classes)).tolist()})
        write_history([{"epoch": epoch + 1, **{name: history[name][epoch] for name in
                                                ("loss", "accuracy", "val_loss", "val_accuracy")}}
                       for epoch in range(len(history["loss"]))], local_out)
        evaluate_shards(saved, paths, split="test").write(local_out)
    return saved


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The :class:`TrainSettings` an ``msc train`` command line asks for."""
    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, widths=args.widths,
                         batchnorm_momentum=args.bn_momentum,
                         early_stopping_patience=args.patience, lr_patience=args.lr_patience,
                         balance_classes=not args.no_class_weights, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    """Run ``msc train``."""
    from msc_core.evaluation import EVALUATION_FILE
    from msc_core.storage import read_bytes

    if args.head_from and args.init_from:
        raise InputError("--head-from and --init-from exclude each other: a new head, or the whole network")
    init_ray(args.address, num_cpus=args.num_cpus)
    if args.head_from:
        model = train_head(args.shards, args.out, settings_from_args(args), base=args.head_from)
    else:
        model = train(args.shards, args.out, settings_from_args(args), workers=args.workers, use_gpu=args.use_gpu,
                      max_failures=args.max_failures, resume=args.resume, storage=args.storage,
                      init_from=args.init_from)
    summary = json.loads(read_bytes(f"{args.out.rstrip('/')}/{EVALUATION_FILE}"))
    summary_line(f"wrote {args.out}: model {model.model_id}, test accuracy {summary['accuracy']:.3f} "
          f"on {summary['windows']} windows, ROC-AUC {summary['roc_auc']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.train``: the same arguments as ``msc train``."""
    from jobs.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
