"""Fast checks of everything under cluster/: every config parses, names job modules that exist with
arguments their parsers accept, pins the Ray and Python versions pyproject.toml allows (the same
ones everywhere), keeps token authentication on, binds local dashboards to 127.0.0.1, and every
shell script is valid bash. Nothing here starts Ray or touches the network."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
KUBERAY = CLUSTER / "kuberay"
RAYJOBS = {job: KUBERAY / f"rayjob-{job}.yaml" for job in ("featurize", "train", "infer")}
SCRIPTS = sorted(CLUSTER.rglob("*.sh"))
LOCAL_START = CLUSTER / "local" / "start.sh"
LOCAL_STOP = CLUSTER / "local" / "stop.sh"
TEXT_FILES = sorted(p for p in CLUSTER.rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".sh", ".md", ""})

MODULE_RE = re.compile(r"python -m (jobs(?:\.\w+)+)")
RAY_VERSION_RE = re.compile(r"MSC_RAY_VERSION=(\S+)")
PYTHON_VERSION_RE = re.compile(r"MSC_PYTHON_VERSION=(\S+)")
IMAGE_RE = re.compile(r"ray(\d+\.\d+\.\d+)-py(\d)(\d+)")


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def pins():
    """(Ray specifier, Python specifier) from pyproject.toml."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ray = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "ray"]
    assert len(ray) == 1, "pyproject.toml must pin ray exactly once"
    return ray[0].specifier, SpecifierSet(project["requires-python"])


def locked_versions() -> dict[str, str]:
    """{package: version} pinned by requirements/runtime.txt."""
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements" / "runtime.txt").read_text(), re.M))


def launcher_commands(config: dict) -> list[str]:
    commands = []
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        commands += config.get(key) or []
    for node_type in config["available_node_types"].values():
        for key in ("initialization_commands", "worker_setup_commands"):
            commands += node_type.get(key) or []
    return commands


def containers(spec: dict) -> list[dict]:
    """Every container of a RayCluster spec (head, all worker groups)."""
    found = list(spec["headGroupSpec"]["template"]["spec"]["containers"])
    for group in spec.get("workerGroupSpecs", []):
        found += group["template"]["spec"]["containers"]
    return found


# --- parsing ---------------------------------------------------------------------------------------

def test_every_yaml_parses():
    yamls = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
    assert {p.name for p in yamls} >= {"aws.yaml", "gcp.yaml", "runtime_env.yaml", "raycluster.yaml",
                                       "rayjob-featurize.yaml", "rayjob-train.yaml", "rayjob-infer.yaml"}
    for path in yamls:
        assert isinstance(load(path), dict), path


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_matches_ray_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = load(path)
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [name for name in types if name != config["head_node_type"]]
    assert any(types[name]["max_workers"] > types[name].get("min_workers", 0) for name in workers), \
        "no autoscaling worker type"
    gpu = [name for name in workers if "gpu" in name]
    assert gpu and all(types[name].get("min_workers", 0) == 0 for name in gpu), "GPU type must be optional"
    mounts = config["file_mounts"]
    for local in mounts.values():
        if local.startswith("./"):
            assert (REPO / local[2:]).exists() or local == "./dist", f"{path.name}: file_mounts {local} missing"


def test_kuberay_manifests_shape():
    cluster = load(KUBERAY / "raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert groups["cpu"]["maxReplicas"] > groups["cpu"]["minReplicas"]
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert groups["gpu"]["minReplicas"] == 0 and "nvidia.com/gpu" in gpu_limits
    for job, path in RAYJOBS.items():
        rayjob = load(path)
        assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob"), path
        assert rayjob["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"], path
        assert MODULE_RE.search(rayjob["spec"]["entrypoint"]).group(1) == f"jobs.{job}", path
        assert isinstance(yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"]), dict), path


# --- entrypoints -------------------------------------------------------------------------------------

def test_every_named_job_module_exists():
    named = set()
    for path in TEXT_FILES:
        named |= set(MODULE_RE.findall(path.read_text()))
    assert {"jobs.featurize", "jobs.train", "jobs.infer"} <= named
    for module in sorted(named):
        file = REPO.joinpath(*module.split(".")).with_suffix(".py")
        assert file.is_file(), f"cluster/ names {module}, but {file.relative_to(REPO)} does not exist"


@pytest.mark.parametrize("job", sorted(RAYJOBS))
def test_rayjob_entrypoint_arguments_parse(job):
    """The job's own argparse accepts the RayJob's arguments (and its module runs as __main__)."""
    import importlib

    module = importlib.import_module(f"jobs.{job}")
    source = Path(module.__file__).read_text()
    assert 'if __name__ == "__main__":' in source, f"jobs.{job} cannot run as python -m"
    from jobs.cli import build_parser

    argv = shlex.split(load(RAYJOBS[job])["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", f"jobs.{job}"]
    args = build_parser().parse_args([job, *argv[3:]])
    assert args.command == job


# --- versions ----------------------------------------------------------------------------------------

def declared_versions() -> tuple[dict[str, str], dict[str, str]]:
    """(Ray versions, Python versions) each config declares, keyed by where."""
    ray, python = {}, {}
    for path in LAUNCHER_CONFIGS:
        for i, command in enumerate(launcher_commands(load(path))):
            if m := RAY_VERSION_RE.search(command):
                ray[f"{path.name} command {i}"] = m.group(1)
            if m := PYTHON_VERSION_RE.search(command):
                python[f"{path.name} command {i}"] = m.group(1)
    cluster = load(KUBERAY / "raycluster.yaml")
    ray["raycluster.yaml rayVersion"] = str(cluster["spec"]["rayVersion"])
    images = {f"raycluster.yaml {c['name']} {c['image']}": c["image"] for c in containers(cluster["spec"])}
    for job, path in RAYJOBS.items():
        for c in load(path)["spec"]["submitterPodTemplate"]["spec"]["containers"]:
            images[f"{path.name} {c['image']}"] = c["image"]
    for where, image in images.items():
        m = IMAGE_RE.search(image)
        assert m, f"{where}: image tag must name the Ray and Python versions (…-rayX.Y.Z-pyXY)"
        ray[where], python[where] = m.group(1), f"{m.group(2)}.{m.group(3)}"
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    base = re.search(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)", dockerfile)
    ray["Dockerfile base"], python["Dockerfile base"] = base.group(1), f"{base.group(2)}.{base.group(3)}"
    ray["Dockerfile check"] = re.search(r"ray.__version__ == '(\S+?)'", dockerfile).group(1)
    return ray, python


def test_versions_match_pyproject_and_lock(pins):
    """The lock is the one source of truth: every config names its Ray and Python versions."""
    ray_spec, python_spec = pins
    ray, python = declared_versions()
    assert len(ray) >= 8 and len(python) >= 6
    assert len(set(ray.values())) == 1, f"configs disagree on the Ray version: {ray}"
    assert len(set(python.values())) == 1, f"configs disagree on the Python version: {python}"
    ray_version, python_version = next(iter(ray.values())), next(iter(python.values()))
    assert ray_spec.contains(ray_version), f"Ray {ray_version} is outside pyproject's {ray_spec}"
    assert python_spec.contains(f"{python_version}.0"), f"Python {python_version} is outside {python_spec}"
    assert ray_version == locked_versions()["ray"], f"configs say Ray {ray_version}, the lock {locked_versions()['ray']}"
    assert python_version == (REPO / ".python-version").read_text().strip()


def test_cluster_ray_matches_installed_ray():
    """Job submission needs the same Ray on laptop and cluster: installed from the same lock."""
    ray = pytest.importorskip("ray")
    declared = set(declared_versions()[0].values())
    assert declared == {ray.__version__}, (
        f"configs pin Ray {declared}, this environment has {ray.__version__}: install from the lock "
        "(bash scripts/setup.sh test)")


# --- authentication ----------------------------------------------------------------------------------

def test_auth_is_never_disabled():
    for path in TEXT_FILES:
        text = path.read_text()
        assert not re.search(r"RAY_AUTH_MODE\W{0,3}disabled", text), f"{path}: turns token auth off"
        assert not re.search(r"(?m)^\s*mode:\s*disabled", text), f"{path}: turns token auth off"


def test_kuberay_auth_token_from_secret():
    def check_env(env: list[dict], where: str):
        by_name = {e["name"]: e for e in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token", where
        ref = by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "msc-ray-auth", "key": "auth_token"}, where
        assert "value" not in by_name["RAY_AUTH_TOKEN"], f"{where}: token inline"

    spec = load(KUBERAY / "raycluster.yaml")["spec"]
    for container in containers(spec):
        check_env(container["env"], f"raycluster {container['name']}")
    check_env(spec["autoscalerOptions"]["env"], "autoscaler")
    for path in RAYJOBS.values():
        for container in load(path)["spec"]["submitterPodTemplate"]["spec"]["containers"]:
            check_env(container["env"], f"{path.name} submitter")


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_auth_on_every_node(path):
    config = load(path)
    assert config["file_mounts"]["~/.msc-ray/auth_token"], "the token must reach every node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("source ~/.msc-ray/env" in c for c in starts), f"{path.name} {key}"
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    setup = (CLUSTER / "node_setup.sh").read_text()
    assert "export RAY_AUTH_MODE=token" in setup and "RAY_AUTH_TOKEN_PATH=" in setup


def test_local_scripts_keep_auth_and_loopback_dashboard():
    start = LOCAL_START.read_text()
    assert "export RAY_AUTH_MODE=token" in start and "export RAY_AUTH_TOKEN_PATH=" in start
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in start
    assert "--head" in start and "--address=" in start, "needs a head and at least one worker node"
    assert "--temp-dir=" in start, "each node needs its own temp dir"
    stop = LOCAL_STOP.read_text()
    assert not re.search(r"(?m)^[^#]*\bray\"? stop\b", stop), "stop.sh must not run `ray stop` (stops everything)"
    assert not re.search(r"(?m)^[^#]*\b(pkill|killall)\b", stop), "stop.sh must signal recorded processes only"


# --- scripts and runtime env -------------------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_script_is_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")


def test_local_scripts_are_executable():
    for script in (LOCAL_START, LOCAL_STOP):
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_runtime_env_is_valid_and_small(tmp_path):
    pytest.importorskip("ray")
    from ray._private.runtime_env import packaging
    from ray.runtime_env import RuntimeEnv

    env = load(CLUSTER / "runtime_env.yaml")
    RuntimeEnv(**env)
    assert "working_dir" not in env, "the working dir comes from `ray job submit --working-dir .`"
    for needed in (".venv/", "data/", "outputs/", ".git/"):
        assert needed in env["excludes"], needed
    # Package the checkout the way `ray job submit --working-dir .` does, ignoring .gitignore to
    # prove the excludes alone keep the virtualenv and data out.
    package = tmp_path / "pkg.zip"
    packaging.create_package(str(REPO), package, include_gitignore=False, excludes=env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert "jobs/featurize.py" in names and "msc_core/__init__.py" in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "data/", "outputs/"))]
    package_gitignore = tmp_path / "pkg-gitignore.zip"
    packaging.create_package(str(REPO), package_gitignore, include_gitignore=True, excludes=env["excludes"])
    size = package_gitignore.stat().st_size
    assert size < 50 * 1024 * 1024, f"working_dir upload is {size / 2**20:.0f} MiB"


def test_readme_documents_the_essentials():
    readme = (CLUSTER / "README.md").read_text()
    for needle in ("cluster/local/start.sh", "cluster/local/stop.sh", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH",
                   "RAY_AUTH_TOKEN", "ray job submit", "--runtime-env cluster/runtime_env.yaml", "s3://",
                   "ray up cluster/aws.yaml", "ray up cluster/gcp.yaml", "kubectl create secret", "TODO(measure)"):
        assert needle in readme, f"cluster/README.md does not mention {needle}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
