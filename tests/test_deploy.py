"""The deployment files: docker-compose.yml against the seed's contract, the Dockerfiles,
.dockerignore, .env.example, and, where the tools exist, `compose config` and a real image."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from lexrag.config import load_config
from lexrag.registry import check_config
from tests.conftest import CORPUS, free_port, stop_processes, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILES = {
    "backend": ROOT / "docker" / "Dockerfile.backend",
    "llm-service": ROOT / "docker" / "Dockerfile.llm-service",
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


# --- helpers ------------------------------------------------------------------------------

NO_COMPOSE_CLI = "no `docker compose` or `docker-compose` CLI (scripts/ci-apt-deploy.sh installs one)"


@functools.cache
def _compose_cli() -> tuple[tuple[str, ...], int] | None:
    """The Compose CLI here, ``docker compose`` first, and its major version (1 or 2)."""
    for cmd in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run(
            [*cmd, "version", "--short"], capture_output=True, text=True, env=_clean_env(), timeout=60
        )
        version = probe.stdout.strip().lstrip("v")
        if probe.returncode == 0 and re.match(r"\d+\.", version):
            return cmd, int(version.split(".")[0])
    return None


def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as the Compose CLI resolves it with only ``env`` set (default: no
    variables), every profile on: interpolated by compose itself, normalised by it too."""
    if _compose_cli() is None:
        pytest.skip(f"{NO_COMPOSE_CLI}: docker-compose.yml is not interpolated without one")
    return copy.deepcopy(_compose_config(frozenset((env or {}).items())))


@functools.cache
def _compose_config(env: frozenset[tuple[str, str]]) -> dict[str, Any]:
    cli = _compose_cli()
    assert cli is not None
    cmd, major = cli
    profiles = sorted({p for svc in _raw_compose()["services"].values() for p in svc.get("profiles", [])})
    with tempfile.TemporaryDirectory() as tmp:
        # An empty env file: neither a developer's .env nor their shell reaches compose.
        empty = Path(tmp) / "empty.env"
        empty.write_text("")
        args = [*cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(empty)]
        for profile in profiles:
            args += ["--profile", profile]
        # Compose v1 has no --format: its `config` prints YAML.
        args += ["config", "--format", "json"] if major >= 2 else ["config"]
        run = subprocess.run(
            args, capture_output=True, text=True, env={**_clean_env(), **dict(env)}, cwd=tmp, timeout=120
        )
    assert run.returncode == 0, f"{' '.join(args)}: {run.stderr}"
    data = json.loads(run.stdout) if major >= 2 else yaml.safe_load(run.stdout)
    assert isinstance(data, dict)
    return data


def _raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _seconds(duration: str) -> float:
    """Compose durations: ``30s``, ``5m``, ``1m30s``, ``5m0s``, ``1h``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


def _bytes(size: str | int) -> int:
    """Compose memory sizes: ``12G`` as written (v1), ``12884901888`` as v2 prints it."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", str(size), re.I)
    assert m, f"not a size: {size!r}"
    number, unit = m.groups()
    return int(float(number) * 1024 ** ("kmgtp".index(unit.lower()) + 1 if unit else 0))


def _env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "compose prints `environment` as a mapping"
    # A null value passes the variable through from compose's own environment: absent here.
    return {str(k): str(v) for k, v in env.items() if v is not None}


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path → (source, mode): v2 prints long-form volumes, v1 ``source:target:mode``."""
    out = {}
    for spec in service.get("volumes") or []:
        if isinstance(spec, dict):
            out[spec["target"]] = (spec["source"], "ro" if spec.get("read_only") else "rw")
        else:
            source, target, *mode = str(spec).split(":")
            out[target] = (source, mode[0] if mode else "rw")
    return out


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = (service.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices", [])
    # Leave out the fields a compose version prints empty.
    return [{k: v for k, v in d.items() if v not in (None, [], {})} for d in devices or []]


def _published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) for each port: v2 prints long-form ports, v1
    ``ip:published:target/protocol``."""
    out = []
    for spec in service.get("ports") or []:
        if isinstance(spec, dict):
            out.append((spec.get("host_ip", ""), str(spec.get("published", "")), str(spec["target"])))
        else:
            head, _, target = str(spec).split("/")[0].rpartition(":")
            ip, _, published = head.rpartition(":")
            out.append((ip, published, target))
    return out


def _stages(dockerfile: Path) -> list[dict[str, Any]]:
    """The build stages: base image (global ARG defaults applied), name, instructions."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    global_args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages:
            name, _, default = rest.strip().partition("=")
            global_args[name] = default
        elif word == "FROM":
            tokens = [t for t in rest.split() if not t.startswith("--")]
            base = _VAR.sub(lambda m: global_args.get(m.group(1), ""), tokens[0])
            name = tokens[2] if len(tokens) >= 3 and tokens[1].upper() == "AS" else None
            stages.append({"base": base, "name": name, "ins": []})
        else:
            assert stages, f"{dockerfile.name}: {word} before the first FROM"
            stages[-1]["ins"].append((word, rest.strip()))
    return stages


def _last(stage_chain: list[dict[str, Any]], word: str) -> str | None:
    for stage in reversed(stage_chain):
        for w, rest in reversed(stage["ins"]):
            if w == word:
                return rest
    return None


def _chain(stages: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The stage called ``name`` and the stages it builds on, base first."""
    by_name = {s["name"]: s for s in stages if s["name"]}
    chain = [by_name[name]]
    while chain[0]["base"] in by_name:
        chain.insert(0, by_name[chain[0]["base"]])
    return chain


def _dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches
    the path or one of its parent folders decides."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not negate
    return ignored


def _clean_env() -> dict[str, str]:
    """The caller's PATH and HOME only: no LLM_PROVIDER or the like from a developer's shell
    (DOCKER_CONFIG: where the docker CLI finds the compose plugin)."""
    keep = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_CONFIG")
    return {k: v for k, v in os.environ.items() if k in keep}


# --- the compose file: the seed's llm-service ----------------------------------------------


def test_llm_service_matches_the_seed() -> None:
    svc = _compose()["services"]["llm-service"]
    assert [(port, target) for _, port, target in _published(svc)] == [("8001", "8000")]
    # Unauthenticated: loopback unless the operator opens it.
    assert _published(svc)[0][0] == "127.0.0.1"
    assert _published(_compose({"LLM_SERVICE_BIND": "0.0.0.0"})["services"]["llm-service"])[0][0] == "0.0.0.0"

    mounts = _mounts(svc)
    assert {"/app/model", "/app/logs"} <= set(mounts)
    assert _env_of(svc)["PYTHONUNBUFFERED"] == "1"
    assert _bytes(svc["deploy"]["resources"]["limits"]["memory"]) == 12 * 1024**3
    assert _gpu_devices(svc) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]

    check = svc["healthcheck"]
    test = check["test"]
    command = " ".join(test[1:]) if isinstance(test, list) else test
    assert command == "curl -f http://localhost:8000/health"
    assert _seconds(check["interval"]) == 30
    # The start period must cover loading the model onto the GPU.
    assert _seconds(check["start_period"]) >= 120

    build = svc["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    assert dockerfile == DOCKERFILES["llm-service"]
    assert build["target"] in {s["name"] for s in _stages(dockerfile)}


def test_backend_talks_to_the_llm_service_once_it_is_healthy() -> None:
    compose = _compose()
    svc = compose["services"]["backend"]
    env = _env_of(svc)
    assert env["LOCAL_LLM_API_URL"] == "http://llm-service:8000"
    assert env["LLM_PROVIDER"] == "local"
    assert env["LEXRAG_INDEX_DIR"] == "/app/index"
    # v2 adds `required: true` (the default) to each dependency.
    assert {name: dep["condition"] for name, dep in svc["depends_on"].items()} == {
        "llm-service": "service_healthy"
    }
    assert all(dep.get("required", True) for dep in svc["depends_on"].values())
    assert [(port, target) for _, port, target in _published(svc)] == [("8000", "8000")]

    # The secrets and the provider come from .env through compose's interpolation.
    raw_env = _raw_compose()["services"]["backend"]["environment"]
    for var in ("OPENAI_API_KEY", "LLM_PROVIDER", "LEXRAG_API_KEYS"):
        assert f"${{{var}" in str(raw_env[var]), f"{var} is not taken from .env"
    switched = _env_of(
        _compose({"LLM_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test"})["services"]["backend"]
    )
    assert (switched["LLM_PROVIDER"], switched["OPENAI_API_KEY"]) == ("openai", "sk-test")

    # The index lives in a named volume, not in the container.
    source, mode = _mounts(svc)["/app/index"]
    assert source in compose["volumes"] and mode == "rw"
    build = svc["build"]
    assert ROOT / build["context"] / build["dockerfile"] == DOCKERFILES["backend"]


def test_one_network_for_every_service() -> None:
    compose = _compose()
    assert len(compose["networks"]) == 1
    (network,) = compose["networks"]
    for name, svc in compose["services"].items():
        # Compose prints a service's networks as a mapping, network → its options.
        assert list(svc.get("networks") or []) == [network], f"{name} is not on the one network"


def test_cpu_profile_runs_without_gpu_or_llm_service() -> None:
    services = _compose()["services"]
    cpu, gpu = services["backend-cpu"], services["backend"]
    assert cpu["profiles"] == ["cpu"]
    assert "depends_on" not in cpu
    assert not _gpu_devices(cpu)
    # No URL: the `local` provider runs the mounted model in-process.
    assert "LOCAL_LLM_API_URL" not in _env_of(cpu)
    assert _mounts(cpu)["/app/model"] == (_mounts(services["llm-service"])["/app/model"][0], "ro")
    # Same image, same index and port: switching machines keeps the data and the clients.
    assert cpu["image"] == gpu["image"]
    assert _mounts(cpu)["/app/index"] == _mounts(gpu)["/app/index"]
    assert _published(cpu) == _published(gpu)
    # Services with no profile are what a plain `docker compose up` starts.
    assert {n for n, s in services.items() if not s.get("profiles")} == {"llm-service", "backend"}


def test_export_service_writes_fp16_frog_into_the_served_model_volume() -> None:
    services = _compose()["services"]
    export = services["model-export"]
    assert export["profiles"] == ["export"]
    command = export["command"]
    assert command[:3] == ["lexrag", "model", "export"]
    assert command[3] == "phamhai/Llama-3.2-3B-Instruct-Frog"
    assert command[4:] == ["/app/model", "--device", "cuda", "--dtype", "fp16"]
    served_source = _mounts(services["llm-service"])["/app/model"][0]
    assert _mounts(export)["/app/model"] == (served_source, "rw")
    assert _gpu_devices(export) == _gpu_devices(services["llm-service"])
    # A host folder instead of the named volume, for every service at once.
    moved = _compose({"LEXRAG_MODEL_DIR": "/srv/frog"})["services"]
    assert {_mounts(moved[n])["/app/model"][0] for n in ("llm-service", "backend", "model-export")} == {
        "/srv/frog"
    }
    assert export["build"]["target"] in {s["name"] for s in _stages(DOCKERFILES["llm-service"])}

    # CPU-only hosts export with the backend image: fp32, then int4 weights for CPU decoding.
    cpu_export = services["model-export-cpu"]
    assert cpu_export["profiles"] == ["export-cpu"]
    assert cpu_export["image"] == services["backend"]["image"]
    assert cpu_export["command"][:4] == command[:4]
    assert cpu_export["command"][4:] == [
        "/app/model",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
        "--quantize",
        "int4",
    ]
    assert _mounts(cpu_export)["/app/model"] == (served_source, "rw")
    # v1 prints the empty `ports: []`, v2 leaves it out: nothing published either way.
    assert not _gpu_devices(cpu_export) and not _published(cpu_export)


def test_env_example_lists_every_variable_and_env_is_ignored() -> None:
    used = set(_VAR.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    used_names = {name for name, _, _ in used}
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    assert used_names - listed == set(), "variables of docker-compose.yml missing from .env.example"
    compose_own = {n for n in listed if n.startswith("COMPOSE_")}
    assert listed - compose_own - used_names == set(), ".env.example lists variables nothing reads"
    # Every line that sets a variable is explained by a comment above it.
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert i > 0 and lines[i - 1].startswith("#"), f".env.example: {line!r} has no comment"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, timeout=30)
    assert ignored.returncode == 0, ".env must be git-ignored"


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_lint(kind: str) -> None:
    dockerfile = DOCKERFILES[kind]
    stages = _stages(dockerfile)
    names = {s["name"] for s in stages if s["name"]}
    for stage in stages:
        base = stage["base"]
        if base in names:
            continue
        image = base.split("@", 1)[0]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert "@sha256:" in base or (tag and tag != "latest"), f"{kind}: FROM {base} is not pinned"

    final = _chain(stages, stages[-1]["name"])
    user = _last(final, "USER")
    assert user is not None and user.split(":")[0] not in ("root", "0"), f"{kind}: runs as root"
    health = _last(final, "HEALTHCHECK")
    assert health is not None and "/health" in health and ":8000" in health
    assert _last(final, "EXPOSE") == "8000"
    assert json.loads(_last(final, "CMD") or "[]") == [
        "lexrag",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert stages[0]["name"] is not None and len(stages) >= 2, f"{kind}: not a multi-stage build"

    for stage in stages:
        for word, rest in stage["ins"]:
            if word != "COPY" or "--from=" in rest:
                continue
            *sources, _ = shlex.split(rest)
            for source in sources:
                if source.startswith("--"):
                    continue
                assert (ROOT / source).exists(), f"{kind}: COPY {source}: no such path"
                tracked = subprocess.run(
                    ["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True, timeout=30
                ).stdout.split()
                for path in tracked or [source.rstrip("/")]:
                    assert not _dockerignored(path), f"{kind}: .dockerignore drops {path}"


def test_named_volumes_mount_on_folders_the_image_user_owns() -> None:
    """A new named volume takes the owner of the folder it is mounted on, so every such folder
    must belong to the non-root user, or the service (or a later one) cannot write to it."""
    compose = _compose()
    for name, svc in compose["services"].items():
        if "build" not in svc:  # an upstream image (postgres) owns its own folders
            continue
        build = svc["build"]
        stages = _stages(ROOT / build["context"] / build["dockerfile"])
        chain = _chain(stages, build.get("target") or stages[-1]["name"])
        user = _last(chain, "USER")
        owned: set[str] = set()
        for stage in chain:
            for run in (rest for word, rest in stage["ins"] if word == "RUN"):
                for match in re.finditer(rf"chown (?:-R )?{user}:{user} ((?:/\S+ ?)+)", run):
                    owned.update(match.group(1).split())
        for target, (source, _) in _mounts(svc).items():
            if source in compose["volumes"]:
                assert target in owned, f"{name}: volume {source} on {target}, which {user} does not own"


def test_llm_service_base_image_matches_onnxruntime_build() -> None:
    """The CUDA base image must carry the CUDA major version onnxruntime-gpu was built
    against, with cuDNN; the backend stays on a plain Python image."""
    build_info = pytest.importorskip("onnxruntime.capi.build_and_package_info")
    cuda = getattr(build_info, "cuda_version", None)
    if not cuda:
        pytest.skip("this onnxruntime build names no CUDA version")
    stages = _stages(DOCKERFILES["llm-service"])
    final_base = _chain(stages, stages[-1]["name"])[0]["base"]
    repo, _, tag = final_base.partition(":")
    assert repo == "nvidia/cuda"
    assert tag.split(".")[0] == cuda.split(".")[0], f"onnxruntime-gpu needs CUDA {cuda}, image has {tag}"
    assert "cudnn" in tag and "runtime" in tag
    backend_bases = {s["base"] for s in _stages(DOCKERFILES["backend"])}
    assert not any("nvidia" in b for b in backend_bases)


def test_dockerignore_keeps_secrets_and_environments_out() -> None:
    for path in (".env", ".venv/bin/python", ".git/HEAD", ".lexrag/index/chunks.sqlite", "tests/conftest.py"):
        assert _dockerignored(path), f"{path} would be sent to the image builder"
    for path in ("core/src/lexrag/__pycache__/config.cpython-311.pyc", "core/src/lexrag.egg-info/PKG-INFO"):
        assert _dockerignored(path)
    for path in (
        "core/README.md",
        "core/pyproject.toml",
        "requirements/constraints.txt",
        "docker/entrypoint.sh",
    ):
        assert not _dockerignored(path)


def test_image_config_files_validate(registry: Any) -> None:
    if "local" not in registry.providers:
        pytest.skip("the `local` provider is not installed: its settings table cannot be checked")
    backend = check_config(load_config(ROOT / "docker" / "backend.toml", env={}), registry)
    assert str(backend.settings.index.dir) == "/app/index"
    service = check_config(load_config(ROOT / "docker" / "llm-service.toml", env={}), registry)
    assert service.settings.llm.provider == "local"
    assert service.settings.retrieval.enabled is False
    assert service.settings.providers["local"] == {"model_dir": "/app/model", "device": "cuda"}


def test_entrypoint_copies_output_to_the_log_dir(tmp_path: Path) -> None:
    entry = str(ROOT / "docker" / "entrypoint.sh")
    logs = tmp_path / "logs"
    env = {**_clean_env(), "LEXRAG_LOG_DIR": str(logs)}
    run = subprocess.run(
        ["bash", entry, "sh", "-c", "echo out; echo err >&2; exit 3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 3
    assert "out" in run.stdout and "err" in run.stdout
    # tee may still be flushing when the command exits.
    log = logs / "lexrag.log"
    for _ in range(50):
        if log.exists() and "err" in log.read_text():
            break
        time.sleep(0.1)
    assert log.read_text().split() == ["out", "err"]

    plain = subprocess.run(
        ["bash", entry, "echo", "hello"], capture_output=True, text=True, env=_clean_env(), timeout=60
    )
    assert (plain.returncode, plain.stdout) == (0, "hello\n")


# --- the stack without Docker: both images' configs, wired as compose wires them ---------


def _serve(config: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``lexrag serve`` as the images' CMD runs it, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lexrag", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**_clean_env(), **env, "LEXRAG_CONFIG": str(config), "PYTHONUNBUFFERED": "1"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=log.parent,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> dict[str, Any]:
    """What ``curl -f URL/health`` waits for: a 2xx answer."""
    return wait_healthy(proc, url, timeout=180, output=lambda: log.read_text(errors="replace")[-3000:])


def _image_config(name: str, tmp: Path, paths: dict[str, str]) -> Path:
    """docker/NAME with the container paths replaced by this machine's."""
    text = (ROOT / "docker" / name).read_text(encoding="utf-8")
    for container_path, here in paths.items():
        assert f'"{container_path}"' in text, f"docker/{name} no longer names {container_path}"
        text = text.replace(f'"{container_path}"', json.dumps(here))
    out = tmp / name
    out.write_text(text, encoding="utf-8")
    return out


@pytest.mark.slow
def test_backend_answers_through_the_llm_service(
    tmp_path: Path, tiny_onnx_dir: Path, tiny_llama: Any
) -> None:
    """The llm-service image's settings (GPU asked for, CPU here) serve the exported model with
    retrieval off; the backend image's settings plus the backend's compose environment serve
    the ingested index and answer a chat request through the llm-service."""
    from openai import OpenAI

    model = str(tiny_onnx_dir)
    tiny_context = tiny_llama.context_window
    index = tmp_path / "index"
    cache = tmp_path / "cache"
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("bo-luat-lao-dong.txt", "bo-luat-dan-su.txt"):
        shutil.copy(CORPUS / name, docs / name)
    backend_env = {
        key: value
        for key, value in _env_of(_compose()["services"]["backend"]).items()
        if key not in ("OPENAI_BASE_URL",)
    }
    backend_env.update({"LEXRAG_INDEX_DIR": str(index), "LEXRAG_CACHE_DIR": str(cache)})

    llm_config = _image_config("llm-service.toml", tmp_path, {"/app/model": model})
    backend_config = _image_config("backend.toml", tmp_path, {"/app/model": model, "/app/index": str(index)})
    # The tiny model's window, which the backend cannot ask the llm-service for (Frog's is 128K).
    with backend_config.open("a", encoding="utf-8") as fh:
        fh.write(f"context_window = {tiny_context}\n")
    ingest = subprocess.run(
        [sys.executable, "-m", "lexrag", "ingest", str(docs)],
        env={**_clean_env(), **backend_env, "LEXRAG_CONFIG": str(backend_config)},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert ingest.returncode == 0, ingest.stderr[-3000:]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        llm_log = tmp_path / "llm-service.log"
        llm, llm_url = _serve(llm_config, {"LEXRAG_CACHE_DIR": str(cache)}, llm_log)
        procs.append(llm)
        health = _wait_healthy(llm, llm_url, llm_log)
        assert health["provider"] == "local" and health["index"]["status"] == "disabled"

        # As .env would set them: the llm-service's URL, and a key for the public API.
        backend_env.update({"LOCAL_LLM_API_URL": llm_url, "LEXRAG_API_KEYS": "deploy-test-key"})
        backend_log = tmp_path / "backend.log"
        backend, backend_url = _serve(backend_config, backend_env, backend_log)
        procs.append(backend)
        health = _wait_healthy(backend, backend_url, backend_log)
        assert health["provider"] == "local" and health["status"] == "ok", health
        # The index ingested through LEXRAG_INDEX_DIR is the one the backend serves.
        parts = health["index"]["parts"].values()
        assert parts and all(part["chunks"] > 0 for part in parts), health["index"]

        client = OpenAI(base_url=f"{backend_url}/v1", api_key="deploy-test-key", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "Người lao động có quyền nghỉ hằng năm không?"}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].message.content is not None
        streamed = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "Người lao động có quyền nghỉ hằng năm không?"}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        assert sum(bool(c.choices and c.choices[0].delta.content) for c in streamed) > 1
        # The generation happened in the llm-service, streamed over OpenAI's chat completions.
        with urllib.request.urlopen(f"{llm_url}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert 'route="/v1/chat/completions",status="200"' in metrics
        assert 'route="/v1/generate"' not in metrics
    finally:
        stop_processes(procs)


# --- with the docker tools --------------------------------------------------------------


@pytest.mark.parametrize("profile", [None, "cpu", "export", "export-cpu"])
def test_compose_config_validates(profile: str | None, tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(NO_COMPOSE_CLI)
    cmd = list(cli[0])
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for env_file in (empty, ENV_EXAMPLE):
        args = [*cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
        if profile:
            args += ["--profile", profile]
        run = subprocess.run(
            [*args, "config", "-q"], capture_output=True, text=True, env=_clean_env(), timeout=120
        )
        assert run.returncode == 0, f"{' '.join(args)} config: {run.stderr}"
        listed = subprocess.run(
            [*args, "config", "--services"], capture_output=True, text=True, env=_clean_env(), timeout=120
        )
        assert {"llm-service", "backend"} <= set(listed.stdout.split())


def test_scale_out_override_in_the_guide_validates(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(NO_COMPOSE_CLI)
    cmd = list(cli[0])
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "device_ids" in b]
    override = tmp_path / "docker-compose.gpus.yml"
    override.write_text(textwrap.dedent(block), encoding="utf-8")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    args = [*cmd, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "-f", str(override)]
    run = subprocess.run(
        [*args, "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    extra = yaml.safe_load(textwrap.dedent(block))["services"]["llm-service-gpu1"]
    assert extra["networks"]["lexrag"]["aliases"] == ["llm-service"]
    assert "ports" not in extra


def _docker_daemon() -> str | None:
    """Why the image test cannot run here, or None when a Docker daemon answers."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return "no Docker daemon answers (`docker info` failed)"
    return None


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_backend_image_builds_and_serves_health() -> None:
    why = _docker_daemon()
    if why:
        pytest.skip(f"{why}: the backend image is not built here")
    base = _stages(DOCKERFILES["backend"])[-1]["base"]
    pull = subprocess.run(["docker", "pull", base], capture_output=True, text=True, timeout=900)
    if pull.returncode != 0:
        pytest.skip(f"the Docker daemon cannot pull {base} (offline?): {pull.stderr.strip()[-300:]}")
    tag = f"lexrag-backend:test-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILES["backend"]), "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    container = None
    try:
        run = subprocess.run(
            ["docker", "run", "-d", "-p", "127.0.0.1::8000", "-e", "LLM_PROVIDER=extractive", tag],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        container = run.stdout.strip()
        port = (
            subprocess.run(
                ["docker", "port", container, "8000/tcp"], capture_output=True, text=True, timeout=60
            )
            .stdout.split(":")[-1]
            .strip()
        )
        status = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                    status = resp.status
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(2)
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
        assert status == 200, f"/health never answered 200: {logs.stdout[-2000:]}{logs.stderr[-2000:]}"
        uid = subprocess.run(
            ["docker", "exec", container, "id", "-u"], capture_output=True, text=True, timeout=60
        )
        assert uid.stdout.strip() not in ("", "0")
    finally:
        if container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=120)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
