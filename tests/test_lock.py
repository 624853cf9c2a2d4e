"""The lock (requirements/*.txt, made by scripts/lock.sh with `uv pip compile`) pins every package
with hashes, stays inside pyproject.toml's ranges, agrees between its two files, and is what this
environment has installed. Nothing here touches the network."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCKS = {name: REPO / "requirements" / f"{name}.txt" for name in ("runtime", "test")}
PIN_RE = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", re.M)
PYTHON_VERSION = (REPO / ".python-version").read_text().strip()
# The environment the lock is made for (pyproject's [tool.uv] environments): Linux, CPython 3.11.
LOCK_ENV = default_environment() | {"sys_platform": "linux", "python_version": PYTHON_VERSION,
                                    "python_full_version": f"{PYTHON_VERSION}.0"}


def locked(name: str, env: dict | None = None) -> dict[str, str]:
    """{canonical name: version} of the lock's lines whose markers hold in ``env`` (all if None)."""
    pins = {}
    for package, version, marker in PIN_RE.findall(LOCKS[name].read_text()):
        if env is None or not marker or Requirement(f"x; {marker}").marker.evaluate(env):
            pins[canonicalize_name(package)] = version
    return pins


def test_every_line_is_pinned_with_hashes():
    for name, path in LOCKS.items():
        text = path.read_text()
        requirements = [line for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
        assert requirements, f"{path} is empty"
        for line in requirements:
            assert PIN_RE.match(line), f"{path.name}: not an exact pin: {line!r}"
        blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
        for block in blocks:
            assert "--hash=sha256:" in block, f"{path.name}: no hash for {block.splitlines()[0]!r}"


def test_lock_satisfies_pyproject_ranges():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in ("s3", "gcs", "test"):
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    for machine in ("x86_64", "aarch64"):
        env = LOCK_ENV | {"platform_machine": machine}
        pins = locked("test", env)
        for req in requirements:
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            assert name in pins, f"{req} is not in the lock ({machine})"
            assert req.specifier.contains(pins[name], prereleases=True), f"lock has {name}=={pins[name]}, pyproject wants {req}"


def test_runtime_lock_is_a_subset_of_the_test_lock():
    runtime, test = locked("runtime"), locked("test")
    assert {"ray", "tensorflow-cpu", "librosa", "s3fs", "gcsfs"} <= set(runtime)
    assert not {"pytest", "moto"} & set(runtime), "test tools belong in test.txt only"
    assert {name: test.get(name) for name in runtime} == runtime, "runtime.txt and test.txt pin different versions"


def test_python_version_is_one_fact():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"python_version == '{PYTHON_VERSION}'" in project["tool"]["uv"]["environments"][0]
    for path in (REPO / "scripts" / "setup.sh", REPO / "scripts" / "lock.sh"):
        assert ".python-version" in path.read_text(), f"{path.name} must read .python-version"


def test_this_environment_was_installed_from_the_lock():
    """What scripts/setup.sh installs is the lock, exactly (for the packages this platform gets)."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("not running from the project's .venv (bash scripts/setup.sh test)")
    env = default_environment()
    mismatched = {}
    for name, version in locked("test", env).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            mismatched[name] = (version, installed)
    assert not mismatched, f"(locked, installed) differ: {mismatched}; rerun bash scripts/setup.sh test"
