"""Shared fixtures: paths into ../shared (skipped cleanly when absent), a local Ray, an S3 server, audio files."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msc_core import synth

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip naming what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared reference material beside the repo")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return shared_path("reference", "golden")


@pytest.fixture(scope="session")
def paper_model_dir() -> Path:
    return shared_path("reference", "paper_model")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the session, with 2 CPUs as on CI."""
    import ray

    from jobs.raylib import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server: ``env`` for job subprocesses, ``bucket`` an s3fs client of it."""

    env: dict
    bucket: object


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on 127.0.0.1 for the session; tests make their own buckets."""
    moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extras)")
    s3fs = pytest.importorskip("s3fs", reason="the S3 tests need s3fs (test extras)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | aws
        yield S3Server(env=env, bucket=s3fs.S3FileSystem(endpoint_url=aws["AWS_ENDPOINT_URL"], key="test",
                                                         secret="test"))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A small model trained for a few steps on synthetic music (1) and speech (0) windows."""
    import keras

    from msc_core.config import PAPER
    from msc_core.depth import featurize
    from msc_core.model import build_model, save_model_dir

    rate, size = PAPER.sample_rate, PAPER.window_samples
    music = [synth.music_like(5.0, sample_rate=rate, seed=seed) for seed in range(4)]
    speech = [synth.speech_like(5.0, sample_rate=rate, seed=seed) for seed in range(4)]
    codes = featurize(np.stack([clip[:size] for clip in music + speech]), PAPER)
    labels = np.array([1] * len(music) + [0] * len(speech))
    model = build_model(PAPER, widths=(4, 8, 16), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(codes, labels, batch_size=4, epochs=3, shuffle=True, verbose=0)
    out = tmp_path_factory.mktemp("model") / "small"
    save_model_dir(model, PAPER, out, source="trained", extra={"purpose": "tests"})
    return out


def write_audio(path: Path, kind: str, seconds: float, *, sample_rate: int = 22050, channels: int = 1,
                seed: int = 0, subtype: str | None = None) -> Path:
    """Write a synthetic music-like or speech-like file; the format follows the extension."""
    generate = synth.music_like if kind == "music" else synth.speech_like
    mono = generate(seconds, sample_rate=sample_rate, seed=seed)
    data = np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, subtype=subtype)
    return path
