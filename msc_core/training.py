"""Training the msc model: an explicit tf.distribute loop over compact shards (no Ray here).

Why an explicit loop instead of ``model.fit``: Keras 3's ``fit`` under
``MultiWorkerMirroredStrategy`` with more than one worker fails
(keras-team/keras#20585, ray-project/ray#47464): the symbolic build reduces a
PerReplica batch and 0-d metrics are reduced along axis 0. Ray's
TensorflowTrainer sets ``TF_USE_LEGACY_KERAS=1`` to select tf-keras, which msc
does not install (tf-keras is frozen at Keras 2 and cannot load the Keras 3
model format the published model uses). So msc keeps one Keras 3 model and trains
it with public tf.distribute calls only: ``strategy.run`` inside a
``tf.function``, per-example losses scaled by the global batch, the Keras
optimizer's ``apply_gradients`` (which all-reduces gradients across workers), and
metrics summed locally and all-reduced once per epoch. BatchNormalization's
moving statistics are not synchronized by the strategy (each replica updates
its own from its local batches), so the loop averages them across workers after
every epoch; moving averages are linear, so this equals averaging every step.
Early stopping,
ReduceLROnPlateau and best-checkpoint selection are a few lines of plain Python
on those global metrics, so every worker takes the same decision. No private
Keras internals are patched.

The loop itself (:func:`fit`) knows nothing about Ray: the caller passes the
strategy, the worker's rank, data factories, a restored :class:`Checkpoint` and
a ``report`` callback (``jobs/train.py`` wires these to Ray Train).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from .config import CLASSES, FeatureConfig
from .errors import FeatureConfigMismatchError, InputError
from .shards import iter_batches, read_feature_config

SPLITS = ("train", "val", "test")
PROGRESS_FILE = "progress.json"
ARRAYS_FILE = "arrays.npz"


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrainSettings:
    """The training recipe; the defaults are the paper's.

    Attributes
    ----------
    epochs : int
        Most epochs to run.
    batch_size : int
        Windows per step on each worker (the global batch is ``batch_size * workers``).
    learning_rate : float
        Initial Adam learning rate.
    widths : tuple of 3 int
        Filters of the three Conv3D layers.
    batchnorm_momentum : float
        Momentum of BatchNormalization's moving statistics (the paper's 0.99;
        see :func:`msc_core.model.build_cnn` for when to lower it).
    early_stopping_patience : int
        Epochs without a lower validation loss before training stops
        (the weights of the best-loss epoch are then restored).
    lr_patience : int
        Epochs without a lower validation loss before the learning rate is multiplied by ``lr_factor``.
    lr_factor : float
    min_delta : float
        Smallest decrease of the validation loss that counts as an improvement.
    shuffle_buffer : int
        Windows in each worker's shuffle buffer.
    balance_classes : bool
        Weigh each training example by ``n_train / (2 * n_train_of_its_class)``.
    seed : int
        Seeds initial weights, dropout and shuffling.
    """

    epochs: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-3
    widths: tuple[int, int, int] = (32, 64, 128)
    batchnorm_momentum: float = 0.99
    early_stopping_patience: int = 15
    lr_patience: int = 7
    lr_factor: float = 0.5
    min_delta: float = 1e-4
    shuffle_buffer: int = 256
    balance_classes: bool = True
    seed: int = 0


# ---------------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class ShardPlan:
    """Shard files with their labelled-window counts, read from the small ``label``/``split`` columns only.

    Attributes
    ----------
    config : FeatureConfig
        Features of every file (all files must agree).
    counts : dict
        ``{path: {split: [windows of each class of CLASSES]}}`` for every file.
    """

    config: FeatureConfig
    counts: dict[str, dict[str, list[int]]]

    @classmethod
    def scan(cls, paths: Sequence[str]) -> "ShardPlan":
        """Count windows per file, split and label; check that all files share one feature config."""
        if not paths:
            raise InputError("no shard files given")
        config = read_feature_config(paths[0])
        counts = {}
        for path in paths:
            found = read_feature_config(path)
            if found.hash != config.hash:
                raise FeatureConfigMismatchError(f"{path}: features {found.hash} differ from {paths[0]}'s {config.hash}")
            counts[path] = {split: [0] * len(CLASSES) for split in SPLITS}
            for batch in iter_batches([path], config, columns=("label", "split")):
                table = pa.Table.from_batches([batch]).group_by(["split", "label"]).aggregate([([], "count_all")])
                for split, label, count in zip(*(table.column(c).to_pylist() for c in ("split", "label", "count_all"))):
                    if split in SPLITS and label in CLASSES:
                        counts[path][split][CLASSES.index(label)] += count
        return cls(config, counts)

    def totals(self, split: str) -> np.ndarray:
        """Labelled windows of ``split`` per class, int64 (len(CLASSES),) in CLASSES order."""
        return np.sum([per_file[split] for per_file in self.counts.values()], axis=0, dtype=np.int64)

    def classes(self) -> tuple[str, ...]:
        """The classes the model learns: those with train windows, in CLASSES order (at least two).

        Raises
        ------
        InputError
            The train split holds windows of fewer than two classes.
        """
        train = self.totals("train")
        found = tuple(name for name, count in zip(CLASSES, train) if count)
        if len(found) < 2:
            raise InputError(f"the train split needs windows of at least two classes; it has "
                             f"{dict(zip(CLASSES, train.tolist()))}")
        return found

    def class_weights(self) -> np.ndarray:
        """Balanced class weights ``n / (C * n_c)`` over the train split, float32 (C,) for :meth:`classes`."""
        train = self.totals("train")[[CLASSES.index(name) for name in self.classes()]]
        return (train.sum() / (len(train) * train)).astype(np.float32)

    def assign(self, workers: int) -> list[list[str]]:
        """Files per worker, balancing train windows greedily (largest file to the lightest worker).

        Raises
        ------
        InputError
            Fewer files holding train windows than workers.
        """
        sized = sorted(((sum(c["train"]), path) for path, c in self.counts.items() if sum(c["train"])), reverse=True)
        if len(sized) < workers:
            raise InputError(f"{len(sized)} shard files hold train windows, too few for {workers} workers "
                             "(each worker reads whole files); featurize into more shards or use fewer workers")
        parts: list[list[str]] = [[] for _ in range(workers)]
        load = [0] * workers
        for size, path in sized:
            lightest = load.index(min(load))
            parts[lightest].append(path)
            load[lightest] += size
        held_out = [path for path, c in self.counts.items() if not sum(c["train"])]
        for index, path in enumerate(sorted(held_out)):
            parts[index % workers].append(path)
        return [sorted(part) for part in parts]

    def steps_per_epoch(self, parts: Sequence[Sequence[str]], batch_size: int) -> int:
        """Steps every worker can take per epoch: the smallest worker's train windows // batch_size."""
        smallest = min(sum(sum(self.counts[path]["train"]) for path in part) for part in parts)
        if smallest < batch_size:
            raise InputError(f"a worker gets only {smallest} train windows, fewer than one batch of {batch_size}")
        return smallest // batch_size


# ---------------------------------------------------------------------------------------- a new head
def pooled_features(model, paths: Sequence[str], *, classes: Sequence[str],
                    batch_size: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pooled convolutional features of every labelled window, by split (what the dense head reads).

    Each shard is read once, whatever its splits.

    Parameters
    ----------
    model : MscModel
        Whose convolutions (:func:`msc_core.model.trunk`) compute the features.
    paths : sequence of str
        Shard files (:func:`msc_core.shards.list_shards`).
    classes : sequence of str
        Label order; rows of other labels are an error.
    batch_size : int
        Windows per forward pass.

    Returns
    -------
    dict
        For each of :data:`SPLITS`: ``(features, labels)``, float32 (N, widths[2]) and
        int32 (N,) indices into ``classes``; N may be 0.
    """
    import tensorflow as tf

    from .model import trunk
    from .shards import codes_from_arrow, labelled

    convolutions = trunk(model.keras_model)
    forward = tf.function(lambda codes: convolutions(codes, training=False),
                          input_signature=[tf.TensorSpec((None, *model.config.encoded_shape), tf.uint8)])
    features = [np.zeros((0, convolutions.output_shape[-1]), np.float32)]
    labels, splits = [np.zeros(0, np.int32)], [np.zeros(0, object)]
    for batch in iter_batches(list(paths), model.config, columns=("codes", "label", "split"), batch_rows=batch_size):
        batch, index = labelled(batch, classes, where=", ".join(paths))
        if batch.num_rows:
            features.append(forward(codes_from_arrow(batch.column("codes"), model.config)).numpy())
            labels.append(index)
            splits.append(batch.column("split").to_numpy(zero_copy_only=False))
    features, labels, splits = np.concatenate(features), np.concatenate(labels), np.concatenate(splits)
    return {split: (features[splits == split], labels[splits == split]) for split in SPLITS}


def fit_head(model, *, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
             classes: Sequence[str], settings: TrainSettings = TrainSettings()):
    """A model with ``model``'s convolutions and a dense head learnt anew for ``classes`` (transfer learning).

    The convolutions stay frozen; the head keeps the paper's shape (dropout .4,
    two ReLU dense layers with dropout .5, a softmax, now over ``len(classes)``),
    its hidden layers start from ``model``'s, and so do the softmax weights of
    the classes ``model`` knows (the others start at random). It learns from the pooled
    features of :func:`pooled_features` with Adam, balanced class weights (when
    ``settings.balance_classes``) and early stopping on the validation loss
    (``settings.early_stopping_patience`` epochs; the best epoch's weights are kept).

    Parameters
    ----------
    model : MscModel
        The model whose convolutions are kept.
    train, val : tuple of (np.ndarray float32 (N, D), np.ndarray int32 (N,))
        Pooled features and class indices.
    classes : sequence of str
        The classes of the new softmax, in order.
    settings : TrainSettings
        ``epochs``, ``batch_size``, ``learning_rate``, ``early_stopping_patience``,
        ``balance_classes`` and ``seed`` are used.

    Returns
    -------
    keras.Model
        uint8 codes -> (B, len(classes)), as :func:`msc_core.model.build_model` builds it.
    history : dict
        Per-epoch ``loss``, ``val_loss``, ``accuracy`` and ``val_accuracy``, and ``best_epoch`` (1-based).
    """
    import keras

    from .model import build_model, head

    keras.utils.set_random_seed(settings.seed)
    base = model.keras_model
    widths = tuple(layer.filters for layer in base.get_layer("cnn").layers if isinstance(layer, keras.layers.Conv3D))
    dense = tuple(layer.units for layer in head(base) if isinstance(layer, keras.layers.Dense))[:-1]
    full = build_model(model.config, widths=widths, dense=dense, outputs=len(classes), seed=settings.seed)
    for new, old in zip(full.get_layer("cnn").layers[:-1], base.get_layer("cnn").layers[:-1]):  # all but the softmax
        new.set_weights(old.get_weights())
    (kernel, bias), (old_kernel, old_bias) = head(full)[-1].get_weights(), head(base)[-1].get_weights()
    for column, name in enumerate(model.labels):
        if name in classes:
            kernel[:, classes.index(name)], bias[classes.index(name)] = old_kernel[:, column], old_bias[column]
    head(full)[-1].set_weights([kernel, bias])
    layers = head(full)
    learner = keras.Sequential([keras.Input((widths[-1],)), *layers])
    counts = np.bincount(train[1], minlength=len(classes))
    if np.any(counts == 0):
        raise InputError(f"the train split needs windows of every class; it has {dict(zip(classes, counts.tolist()))}")
    weights = (counts.sum() / (len(classes) * counts)) if settings.balance_classes else np.ones(len(classes))
    learner.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(patience=settings.early_stopping_patience, min_delta=settings.min_delta,
                                         restore_best_weights=True)
    result = learner.fit(*train, validation_data=val, epochs=settings.epochs, batch_size=settings.batch_size,
                         class_weight=dict(enumerate(weights.tolist())), callbacks=[stop], verbose=0, shuffle=True)
    history = {name: [float(value) for value in values] for name, values in result.history.items()}
    history["best_epoch"] = int(np.argmin(history["val_loss"])) + 1
    return full, history


# ---------------------------------------------------------------------------------------- checkpoints
@dataclass
class Progress:
    """Where training stands; JSON in every checkpoint.

    Attributes
    ----------
    epoch : int
        Epochs completed.
    learning_rate : float
        Current learning rate.
    best_val_loss : float
        Lowest validation loss so far (early stopping and plateau monitor).
    best_loss_epoch : int
    best_val_accuracy : float
        Highest validation accuracy so far (best checkpoint; ties go to the lower loss).
    best_accuracy_epoch : int
    epochs_without_improvement : int
        Epochs since ``best_val_loss`` improved (early stopping counter).
    plateau_wait : int
        Epochs since the loss improved or the learning rate was last cut.
    stopped_early : bool
    resumed_at : list of int
        Epochs from which training was resumed after a restart.
    history : list of dict
        One row per epoch: ``epoch, loss, accuracy, val_loss, val_accuracy,
        learning_rate, seconds, input_wait_seconds, windows``.
    """

    epoch: int = 0
    learning_rate: float = 1e-3
    best_val_loss: float = math.inf
    best_loss_epoch: int = 0
    best_val_accuracy: float = -1.0
    best_accuracy_epoch: int = 0
    epochs_without_improvement: int = 0
    plateau_wait: int = 0
    stopped_early: bool = False
    resumed_at: list[int] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Checkpoint:
    """Everything needed to continue training exactly.

    Attributes
    ----------
    progress : Progress
    model : list of np.ndarray
        Current ``model.weights`` values.
    optimizer : list of np.ndarray
        ``optimizer.variables`` values (step count, Adam moments).
    best_loss : list of np.ndarray
        Weights of the lowest-validation-loss epoch (restored on early stopping).
    best_accuracy : list of np.ndarray
        Weights of the highest-validation-accuracy epoch (the exported model).
    """

    progress: Progress
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    best_loss: list[np.ndarray]
    best_accuracy: list[np.ndarray]

    _GROUPS = ("model", "optimizer", "best_loss", "best_accuracy")

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``progress.json`` and ``arrays.npz`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"{group}/{i:04d}": value for group in self._GROUPS for i, value in enumerate(getattr(self, group))}
        np.savez(directory / ARRAYS_FILE, **arrays)
        (directory / PROGRESS_FILE).write_text(json.dumps(dataclasses.asdict(self.progress), indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Checkpoint":
        """Inverse of :meth:`save`."""
        directory = Path(directory)
        progress = Progress(**json.loads((directory / PROGRESS_FILE).read_text()))
        with np.load(directory / ARRAYS_FILE) as stored:
            groups = {group: [stored[key] for key in sorted(stored.files) if key.startswith(f"{group}/")]
                      for group in cls._GROUPS}
        return cls(progress, **groups)


# ---------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class EpochEnd:
    """What :func:`fit` tells its callbacks after each epoch (identical on every worker but ``rank``).

    Attributes
    ----------
    progress : Progress
        Updated with this epoch.
    checkpoint : Checkpoint
        To persist (every worker holds the same one).
    rank : int
    model : keras.Model
        The live model (mirrored weights).
    peak_rss_mb : float
        This process's peak resident memory so far (MiB).
    """

    progress: Progress
    checkpoint: Checkpoint
    rank: int
    model: Any
    peak_rss_mb: float


def _values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def _assign(variables, values: Sequence[np.ndarray]) -> None:
    if len(variables) != len(values):
        raise InputError(f"checkpoint holds {len(values)} arrays, the model has {len(variables)} variables")
    for variable, value in zip(variables, values):
        variable.assign(value)


def fit(config: FeatureConfig, settings: TrainSettings, *, strategy, rank: int, workers: int,
        train_data: Callable[[int], Any], val_data: Callable[[], Any], class_weights: np.ndarray,
        initial: Sequence[np.ndarray] | None = None, restore: Checkpoint | None = None,
        on_epoch_end: Callable[[EpochEnd], None] = lambda end: None) -> Checkpoint:
    """Train an msc model data-parallel under ``strategy`` on this worker's data.

    Every worker calls this with the same arguments except ``rank`` and its data.

    Parameters
    ----------
    config : FeatureConfig
        Features of the codes.
    settings : TrainSettings
    strategy : tf.distribute.Strategy
        ``MultiWorkerMirroredStrategy`` (one replica per worker) or the default strategy.
    rank, workers : int
        This worker's index and the number of workers.
    train_data : callable(epoch) -> tf.data.Dataset
        This worker's (uint8 codes (B, n_mels, frames), int32 labels (B,)) batches for
        1-based ``epoch`` (e.g. :func:`msc_core.shards.tf_dataset` ``.take(steps)``); every
        worker must give the same number of batches of ``settings.batch_size``.
    val_data : callable() -> tf.data.Dataset
        This worker's share of the validation windows (any number of batches).
    class_weights : np.ndarray, float32, shape (C,)
        Weight of each class in the training loss.
    initial : sequence of np.ndarray or None
        Starting values of the model's weights (``keras.Model.get_weights`` of a model of the
        same widths and classes), for fine-tuning; ignored when ``restore`` is given. The
        BatchNormalization layers then stay in inference mode with the given statistics and
        scales (Keras's advice for fine-tuning: batch statistics would shift every activation
        the dense head was learnt on).
    restore : Checkpoint or None
        Continue from this checkpoint.
    on_epoch_end : callable(EpochEnd)
        Called on every worker after each epoch (persist the checkpoint, report, test hooks).

    Returns
    -------
    Checkpoint
        The final state; ``model`` holds the restored best-validation-loss weights
        when training stopped early, ``best_accuracy`` the exported model's weights.
    """
    import keras
    import tensorflow as tf

    from .model import build_model

    keras.utils.set_random_seed(settings.seed)
    global_batch = settings.batch_size * workers
    with strategy.scope():
        model = build_model(config, widths=settings.widths, batchnorm_momentum=settings.batchnorm_momentum,
                            outputs=len(class_weights), seed=settings.seed)
        if initial is not None:  # a frozen BatchNormalization runs in inference mode (Keras 3)
            for layer in model.get_layer("cnn").layers:
                layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        optimizer = keras.optimizers.Adam(settings.learning_rate)
        optimizer.build(model.trainable_variables)
    class_weight_table = tf.constant(class_weights, tf.float32)
    if initial is not None:
        model.set_weights(initial)
    progress = Progress(learning_rate=settings.learning_rate)
    best_loss = best_accuracy = _values(model.weights)
    if restore is not None:
        _assign(model.weights, restore.model)
        _assign(optimizer.variables, restore.optimizer)
        progress, best_loss, best_accuracy = restore.progress, restore.best_loss, restore.best_accuracy
        progress.resumed_at.append(progress.epoch)
        optimizer.learning_rate.assign(progress.learning_rate)

    def replica_step(codes, labels):
        with tf.GradientTape() as tape:
            probs = model(codes, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
            weighted = per_example * tf.gather(class_weight_table, labels)
            loss = tf.nn.compute_average_loss(weighted, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return _sums(per_example, probs, labels)

    @tf.function
    def train_step(codes, labels):
        return strategy.run(replica_step, args=(codes, labels))

    @tf.function
    def val_step(codes, labels):
        probs = model(codes, training=False)
        return _sums(keras.losses.sparse_categorical_crossentropy(labels, probs), probs, labels)

    @tf.function
    def all_reduce_sum(local):
        return strategy.run(lambda x: tf.distribute.get_replica_context().all_reduce("sum", tf.identity(x)),
                            args=(local,))

    @tf.function
    def average_statistics():
        def replica():
            context = tf.distribute.get_replica_context()
            means = context.all_reduce("mean", [tf.identity(v.value) for v in model.non_trainable_weights])
            for variable, mean in zip(model.non_trainable_weights, means):
                variable.assign(mean)
        strategy.run(replica)

    while progress.epoch < settings.epochs and not progress.stopped_early:
        epoch = progress.epoch + 1
        started = time.perf_counter()
        waiting = 0.0
        train_sums = np.zeros(3)
        batches = iter(train_data(epoch))
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            waiting += time.perf_counter() - asked
            if batch is None:
                break
            train_sums += train_step(*batch).numpy()
        average_statistics()
        seconds = time.perf_counter() - started
        val_sums = sum((val_step(*batch).numpy() for batch in val_data()), np.zeros(3))
        total = all_reduce_sum(tf.constant(np.concatenate([train_sums, val_sums]), tf.float64)).numpy()
        if not total[5]:
            raise InputError("the val split holds no labelled windows; early stopping needs them")
        row = {"epoch": epoch, "loss": total[0] / max(total[2], 1), "accuracy": total[1] / max(total[2], 1),
               "val_loss": total[3] / total[5], "val_accuracy": total[4] / total[5],
               "learning_rate": progress.learning_rate, "seconds": seconds, "input_wait_seconds": waiting,
               "windows": int(total[2])}
        progress.history.append(row)
        progress.epoch = epoch
        current = _values(model.weights)
        if row["val_accuracy"] > progress.best_val_accuracy or (
                row["val_accuracy"] == progress.best_val_accuracy and row["val_loss"] < progress.best_val_loss):
            progress.best_val_accuracy, progress.best_accuracy_epoch, best_accuracy = row["val_accuracy"], epoch, current
        if row["val_loss"] < progress.best_val_loss - settings.min_delta:
            progress.best_val_loss, progress.best_loss_epoch, best_loss = row["val_loss"], epoch, current
            progress.epochs_without_improvement = progress.plateau_wait = 0
        else:
            progress.epochs_without_improvement += 1
            progress.plateau_wait += 1
        if progress.plateau_wait >= settings.lr_patience:
            progress.learning_rate *= settings.lr_factor
            optimizer.learning_rate.assign(progress.learning_rate)
            progress.plateau_wait = 0
        if progress.epochs_without_improvement >= settings.early_stopping_patience:
            progress.stopped_early = True
            _assign(model.weights, best_loss)
        checkpoint = Checkpoint(progress, _values(model.weights), _values(optimizer.variables), best_loss, best_accuracy)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        on_epoch_end(EpochEnd(progress, checkpoint, rank, model, peak_mb))
    return Checkpoint(progress, _values(model.weights), _values(optimizer.variables), best_loss, best_accuracy)


def _sums(per_example, probs, labels):
    """float64 (3,): summed loss, correct predictions and examples of one batch."""
    import tensorflow as tf

    correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), labels), tf.float64)
    return tf.stack([tf.reduce_sum(tf.cast(per_example, tf.float64)), tf.reduce_sum(correct),
                     tf.cast(tf.size(labels), tf.float64)])
