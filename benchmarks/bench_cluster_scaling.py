"""Scaling from 1 to 2 nodes of a real local Ray cluster, measured in one run.

    python benchmarks/bench_cluster_scaling.py [--files 48] [--seconds 60] [--cpus-per-node 1] [--no-infer]

Generates one archive (half music-like, half speech-like WAV, 22.05 kHz), then for
1 node (head only) and 2 nodes (head + 1 worker node), each started with
cluster/local/start.sh with ``--cpus-per-node`` logical CPUs (default 1, so the
comparison is nodes, not cores), runs the real jobs' drivers against the cluster
(``--address``) and prints windows/s:

- featurize: windows / the job's own time (manifest ``timings``: listing to the last
  record, Ray start-up excluded);
- infer (bundled default model, labelling's default windows: a 1-s hop with a first
  pass every 5 s): audio seconds / its labelling phase (``summary.json``
  ``timings_s``: joining the cluster, the model actors' start-up and every chunk);

and the 2-node / 1-node ratio of each. Every cluster is stopped with stop.sh;
nothing else on the machine is touched. The load average is printed with the results,
since on a shared machine other processes take cores too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msc_core import synth  # noqa: E402
from scripts.local_cluster import REPO, local_cluster  # noqa: E402



def make_archive(root: Path, files: int, seconds: float) -> None:
    for index in range(files):
        kind = ("music", "speech")[index % 2]
        audio = (synth.music_like if kind == "music" else synth.speech_like)(seconds, sample_rate=22050, seed=index)
        path = root / kind / f"{index:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio, 22050)


def run_driver(cluster, *args: str) -> str:
    """Run ``python -m <job> ARGS --address <cluster>``; its combined output (fails loudly)."""
    result = subprocess.run([sys.executable, "-m", *args, "--address", cluster.address], cwd=REPO,
                            env=cluster.env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def measure(nodes: int, *, audio: Path, audio_s: float, work: Path, cpus: int, infer: bool) -> dict:
    """windows/s of featurize (and audio-s/s of infer) on a cluster of ``nodes`` nodes of ``cpus`` CPUs each."""
    with local_cluster(head_cpus=cpus, worker_cpus=cpus, workers=nodes - 1, log=lambda _: None) as cluster:
        out = work / f"features-{nodes}"
        run_driver(cluster, "jobs.featurize", str(audio), "--out", str(out), "--files-per-task", "2", "--quiet")
        manifest = json.loads((out / "manifest.json").read_text())
        result = {"nodes": nodes, "windows": manifest["windows"],
                  "featurize_windows_per_s": manifest["timings"]["windows_per_s"]}
        if infer:
            labels = work / f"labels-{nodes}"
            run_driver(cluster, "jobs.infer", str(audio), "--out", str(labels), "--chunk-files", "2")
            timings = json.loads((labels / "summary.json").read_text())["timings_s"]
            result["infer_audio_s_per_s"] = audio_s / timings["labelling"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each file (default 60: 12 windows)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--no-infer", action="store_true", help="featurize only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msc-scaling-") as scratch:
        work = Path(scratch)
        make_archive(work / "audio", args.files, args.seconds)
        results = []
        for nodes in (1, 2):
            started = time.monotonic()
            results.append(measure(nodes, audio=work / "audio", audio_s=args.files * args.seconds, work=work,
                                   cpus=args.cpus_per_node, infer=not args.no_infer))
            print(f"{nodes} node(s) x {args.cpus_per_node} CPU: {results[-1]} "
                  f"(cluster start to stop {time.monotonic() - started:.0f} s)", flush=True)
    print(f"\nmachine: {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"archive: {args.files} files x {args.seconds:g} s = {results[0]['windows']} windows")
    for job, key, unit in (("featurize", "featurize_windows_per_s", "windows/s"),
                           ("infer", "infer_audio_s_per_s", "audio-s/s")):
        if key in results[0]:
            one, two = results[0][key], results[1][key]
            print(f"{job:9s}: 1 node {one:7.1f} {unit}, 2 nodes {two:7.1f} {unit}, ratio {two / one:.2f} "
                  f"(per CPU: {one / args.cpus_per_node:.1f} and {two / 2 / args.cpus_per_node:.1f} {unit})")


if __name__ == "__main__":
    main()
