"""Training throughput: windows/s per worker with 1 and 2 Ray workers, peak memory, time waiting on input.

Makes a synthetic featurized dataset with the paper's features, then:

1. trains through ``jobs.train.train`` (Ray Train, MultiWorkerMirroredStrategy)
   with 1 and then 2 workers, each streaming its shard files, and prints each
   worker's windows/s, peak resident memory and share of the epoch spent
   waiting for the next batch (last epoch, so tracing is excluded);
2. runs :func:`msc_core.training.fit` in this process once streaming from the
   shards and once from in-memory tensors, and prints the ratio of their
   throughputs (target: shards >= 90% of in-memory).

Usage::

    python benchmarks/bench_train.py [--widths 32,64,128] [--steps 8] [--epochs 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_training import write_synthetic_shards  # noqa: E402  (the tests' synthetic dataset helper)

from jobs.raylib import init_ray  # noqa: E402
from jobs.train import parse_widths, train  # noqa: E402
from msc_core.config import PAPER  # noqa: E402
from msc_core.shards import list_shards, tf_dataset  # noqa: E402
from msc_core.training import ShardPlan, TrainSettings, fit  # noqa: E402


def record_epochs(directory: Path):
    """A per-worker hook writing ``rank<r>-epoch<e>.json`` with the epoch's timing and peak memory."""
    def hook(end) -> None:
        row = end.progress.history[-1]
        (directory / f"rank{end.rank}-epoch{end.progress.epoch}.json").write_text(json.dumps({
            "seconds": row["seconds"], "input_wait_seconds": row["input_wait_seconds"],
            "peak_rss_mb": end.peak_rss_mb}))
    return hook


def ray_run(data: Path, scratch: Path, settings: TrainSettings, workers: int) -> None:
    """Train with ``workers`` Ray workers and print each worker's figures for the last epoch."""
    records = scratch / f"records-{workers}"
    records.mkdir()
    train(str(data), str(scratch / f"model-{workers}"), settings, workers=workers, max_failures=0,
          on_epoch_end=record_epochs(records))
    plan = ShardPlan.scan(list_shards(str(data)))
    windows = settings.batch_size * plan.steps_per_epoch(plan.assign(workers), settings.batch_size)
    for rank in range(workers):
        row = json.loads((records / f"rank{rank}-epoch{settings.epochs}.json").read_text())
        print(f"ray  workers={workers} rank={rank}: {windows / row['seconds']:6.2f} windows/s, "
              f"waiting on input {100 * row['input_wait_seconds'] / row['seconds']:4.1f}% of the epoch, "
              f"peak RSS {row['peak_rss_mb'] / 1024:.2f} GiB")


def local_run(data: Path, settings: TrainSettings, *, in_memory: bool) -> float:
    """Windows/s of the last epoch of :func:`fit` in this process (default strategy), from shards or memory."""
    import numpy as np
    import tensorflow as tf

    paths = list_shards(str(data))
    plan = ShardPlan.scan(paths)
    steps = plan.steps_per_epoch([paths], settings.batch_size)
    if in_memory:
        codes, labels = map(np.concatenate, zip(*((c.numpy(), y.numpy()) for c, y in tf_dataset(
            paths, PAPER, split="train", batch_size=64))))
        tensors = tf.data.Dataset.from_tensor_slices((codes, labels))

        def train_data(epoch):
            return tensors.shuffle(len(codes), seed=epoch).batch(settings.batch_size, drop_remainder=True).take(steps)
    else:
        def train_data(epoch):
            return tf_dataset(paths, PAPER, split="train", batch_size=settings.batch_size, shuffle_seed=epoch,
                              shuffle_buffer=settings.shuffle_buffer).take(steps)
    final = fit(PAPER, settings, strategy=tf.distribute.get_strategy(), rank=0, workers=1, train_data=train_data,
                val_data=lambda: tf_dataset(paths, PAPER, split="val", batch_size=settings.batch_size),
                class_weights=plan.class_weights())
    row = final.progress.history[-1]
    rate = row["windows"] / row["seconds"]
    print(f"local from {'memory' if in_memory else 'shards'}: {rate:6.2f} windows/s, "
          f"waiting on input {100 * row['input_wait_seconds'] / row['seconds']:4.1f}% of the epoch")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=parse_widths, default=(32, 64, 128))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch per worker with 2 workers")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is measured")
    args = parser.parse_args()
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, widths=args.widths)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        data = write_synthetic_shards(scratch / "data", PAPER, files=2,
                                      splits={"train": args.steps * args.batch_size, "val": 2, "test": 2})
        print(f"dataset: 2 files x {args.steps * args.batch_size} train windows, paper features "
              f"({time.perf_counter() - started:.0f} s to make); widths {args.widths}, batch {args.batch_size}")
        init_ray(num_cpus=2)
        for workers in (1, 2):
            ray_run(data, scratch, settings, workers)
        from_shards = local_run(data, settings, in_memory=False)
        from_memory = local_run(data, settings, in_memory=True)
        print(f"shards vs in-memory throughput: {100 * from_shards / from_memory:.1f}% (target >= 90%)")


if __name__ == "__main__":
    main()
