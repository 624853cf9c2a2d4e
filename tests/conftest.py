"""Shared fixtures: paths into ../shared (skipped cleanly when absent), a local Ray, audio files."""

from __future__ import annotations

import os
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


def write_audio(path: Path, kind: str, seconds: float, *, sample_rate: int = 22050, channels: int = 1,
                seed: int = 0, subtype: str | None = None) -> Path:
    """Write a synthetic music-like or speech-like file; the format follows the extension."""
    generate = synth.music_like if kind == "music" else synth.speech_like
    mono = generate(seconds, sample_rate=sample_rate, seed=seed)
    data = np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, subtype=subtype)
    return path
