"""The Kubernetes manifests under deploy/kubernetes/, as rendered per overlay (rendered/*.yaml).

Offline: every resource validates against the Kubernetes OpenAPI schemas bundled with
kubernetes-validate; the rest are the deployment's own rules (grace period vs shutdown timeout,
no secret value in the repository, GPU vs CPU workers, env vars the code reads, mounts). Where a
kustomize renderer (kustomize or kubectl) is installed, the rendered files must also match it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
CODE_DIRS = ("adamod", "studies", "service", "workers")
# Kubernetes versions to validate against: an old one still in service and the newest bundled.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
SECRET_NAME = "adamod-lab"
SECRET_KEYS = {"postgres-password", "api-tokens", "database-url"}
# What the official postgres image reads (the code never sees these).
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA"}
CHECKPOINT_DIR = "/var/lib/adamod-lab/checkpoints"
GRACE_MARGIN_S = 30


def _load_render_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("kube_render", KUBE / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render_module()
OVERLAYS = render.OVERLAYS


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render.rendered_path(name).read_text()) if d]


RENDERED = {name: _docs(name) for name in OVERLAYS}


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name}")


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container and init container of every workload."""
    found = []
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            spec = _pod_spec(doc)
            for container in spec.get("initContainers", []) + spec["containers"]:
                found.append((doc, container))
    return found


def _worker(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _find(docs, "Deployment", "adamod-lab-worker")


def _code_text() -> str:
    return "\n".join(
        path.read_text(errors="replace")
        for folder in CODE_DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
    )


def test_every_overlay_has_a_rendered_file() -> None:
    overlays = {p.name for p in (KUBE / "overlays").iterdir() if p.is_dir()}
    assert overlays == set(OVERLAYS)
    assert {p.stem for p in (KUBE / "rendered").glob("*.yaml")} == set(OVERLAYS)
    for name in OVERLAYS:
        assert RENDERED[name], name


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", OVERLAYS)
def test_rendered_resources_validate_against_the_schemas(name: str, version: str) -> None:
    for doc in RENDERED[name]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # name the resource
            kind, res = doc.get("kind"), doc.get("metadata", {}).get("name")
            pytest.fail(f"{name}: {kind}/{res} invalid for Kubernetes {version}: {exc.message}")


def test_rendered_files_are_up_to_date() -> None:
    command = render.renderer()
    if command is None:
        pytest.skip("no kustomize renderer (kustomize or kubectl) installed")
    for name in OVERLAYS:
        assert render.rendered_path(name).read_text() == render.render(name, command), (
            f"rendered/{name}.yaml is out of date: run python deploy/kubernetes/render.py"
        )


def test_secrets_kustomization_renders_from_files_only(tmp_path: Path) -> None:
    """secrets/ generates the Secret from user-written files: no literals, files git-ignored."""
    kustomization = yaml.safe_load((KUBE / "secrets" / "kustomization.yaml").read_text())
    generators = kustomization["secretGenerator"]
    assert [g["name"] for g in generators] == [SECRET_NAME]
    for generator in generators:
        assert set(generator) <= {"name", "type", "files"}, "literals/envs would hold values"
        assert set(generator["files"]) <= SECRET_KEYS
    if shutil.which("git") and (ROOT / ".git").exists():
        for key in SECRET_KEYS:
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", str(KUBE / "secrets" / key)], cwd=ROOT
            )
            assert ignored.returncode == 0, f"secrets/{key} is not git-ignored"
    command = render.renderer()
    if command is None:
        return
    work = tmp_path / "secrets"
    shutil.copytree(KUBE / "secrets", work)
    for key in generators[0]["files"]:
        (work / key).write_text("not-a-real-value")
    out = subprocess.run([*command, str(work)], check=True, capture_output=True, text=True)
    [secret] = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", SECRET_NAME)
    assert secret["metadata"]["namespace"] == "adamod-lab"
    assert set(secret["data"]) == set(generators[0]["files"])
    kubernetes_validate.validate(secret, VERSIONS[-1], strict=True)


def test_no_secret_value_in_plain_text() -> None:
    url_with_password = re.compile(r"://[^/\s:@]+:(?P<pw>[^@\s]+)@")
    for path in sorted(KUBE.rglob("*.yaml")):
        text = path.read_text()
        for match in url_with_password.finditer(text):
            # $(VAR), expanded by Kubernetes from a secretKeyRef, or a placeholder in a comment
            assert re.fullmatch(r"\$\([A-Z_]+\)|PASSWORD", match["pw"]), f"{path}: a password"
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            assert doc.get("kind") != "Secret", f"{path}: a Secret with values in the repo"
            if doc.get("kind") == "ConfigMap":
                blob = yaml.safe_dump(doc).lower()
                assert "password" not in blob and "token" not in blob, path
    for name, docs in RENDERED.items():
        for workload, container in _containers(docs):
            where = f"{name}: {workload['metadata']['name']}/{container['name']}"
            assert "envFrom" not in container, where
            for env in container.get("env", []):
                secretish = re.search(r"PASSWORD|TOKEN|SECRET", env["name"])
                if secretish:
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    assert ref and "value" not in env, f"{where}: {env['name']} not a secretKeyRef"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET_NAME and ref["key"] in SECRET_KEYS, where
    example = (KUBE / "secrets" / "secrets.example").read_text()
    for key in SECRET_KEYS:
        assert key in example, f"secrets.example does not explain {key}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_worker_grace_period_exceeds_its_shutdown_timeout(name: str) -> None:
    from workers.__main__ import build_parser

    worker = _worker(RENDERED[name])
    spec = _pod_spec(worker)
    [container] = spec["containers"]
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv[:2] == ["adamod-lab", "worker"], argv
    assert "--shutdown-timeout" in argv, "say the timeout the grace period is sized for"
    options = build_parser().parse_args(argv[2:])
    grace = spec["terminationGracePeriodSeconds"]
    assert grace >= options.shutdown_timeout + GRACE_MARGIN_S, (grace, options.shutdown_timeout)
    # A preStop hook would eat into the grace period before the SIGTERM the worker acts on.
    assert "preStop" not in container.get("lifecycle", {})


@pytest.mark.parametrize("name", OVERLAYS)
def test_gpu_and_cpu_workers(name: str) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    spec = _pod_spec(_worker(RENDERED[name]))
    [container] = spec["containers"]
    limits = container.get("resources", {}).get("limits", {})
    argv = container.get("args", [])
    if name == "cpu":
        assert container["image"] == compose["worker-cpu"]["image"]
        assert "nvidia.com/gpu" not in yaml.safe_dump(RENDERED[name])
        assert argv[argv.index("--device") + 1] == "cpu"
    else:
        assert container["image"] == compose["worker"]["image"]
        assert limits.get("nvidia.com/gpu") == 1
        assert argv[argv.index("--device") + 1] in {"auto", "cuda", "cuda:0"}
    for workload, other in _containers(RENDERED[name]):
        if workload["metadata"]["name"] in {"adamod-lab-api", "adamod-lab-dashboard"}:
            assert other["image"] == compose["api"]["image"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_env_vars_are_ones_the_code_reads(name: str) -> None:
    from service.settings import Settings

    code = _code_text()
    # The API's settings are read by pydantic-settings as ADAMOD_LAB_<FIELD>.
    settings_env = {f"ADAMOD_LAB_{field.upper()}" for field in Settings.model_fields}
    for workload, container in _containers(RENDERED[name]):
        where = f"{name}: {workload['metadata']['name']}/{container['name']}"
        env = container.get("env", [])
        if container["image"].startswith("postgres:"):
            assert {e["name"] for e in env} <= POSTGRES_IMAGE_ENV, where
            continue
        # A variable may exist only to be expanded into another one or into the command line.
        expanded = " ".join(
            [str(e.get("value", "")) for e in env]
            + container.get("command", [])
            + container.get("args", [])
        )
        for var in env:
            if f"$({var['name']})" in expanded:
                continue
            assert var["name"].startswith("ADAMOD_LAB_"), f"{where}: {var['name']}"
            if var["name"] in settings_env:
                continue
            assert re.search(rf"\b{var['name']}\b", code), f"{where}: no code reads {var['name']}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_database_url_everywhere_and_api_requires_tokens(name: str) -> None:
    docs = RENDERED[name]
    for workload, container in _containers(docs):
        if container["image"].startswith("postgres:"):
            continue
        names = [e["name"] for e in container.get("env", [])]
        assert "ADAMOD_LAB_DATABASE_URL" in names, workload["metadata"]["name"]
    api = _find(docs, "Deployment", "adamod-lab-api")
    [container] = _pod_spec(api)["containers"]
    argv = [*container["command"], *container.get("args", [])]
    assert argv[:2] == ["adamod-lab", "serve"]  # serve migrates the database at start-up
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["ADAMOD_LAB_API_TOKENS"]["valueFrom"]
    assert "ADAMOD_LAB_ALLOW_NO_AUTH" not in env
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
    service = _find(docs, "Service", "adamod-lab-api")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    has_postgres = any(d["kind"] == "StatefulSet" for d in docs)
    assert has_postgres == (name != "external-db")
    if has_postgres:
        _find(docs, "Service", "adamod-lab-postgres")


@pytest.mark.parametrize("name", OVERLAYS)
def test_volumes_match_the_env_paths(name: str) -> None:
    docs = RENDERED[name]
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    spec = _pod_spec(_worker(docs))
    [container] = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ADAMOD_LAB_CHECKPOINT_DIR"] == CHECKPOINT_DIR
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for var in ("ADAMOD_LAB_CHECKPOINT_DIR", "ADAMOD_LAB_DATA_DIR"):
        path = env[var]
        assert path in mounts, f"{var}={path} is not a mount"
        claim = volumes[mounts[path]]["persistentVolumeClaim"]["claimName"]
        # Every worker replica (on any node) reads and writes it.
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], claim
    # The Dockerfile's workers also default to /data; keep the two in step.
    assert "ADAMOD_LAB_DATA_DIR=/data" in (ROOT / "Dockerfile").read_text()
    assert env["ADAMOD_LAB_DATA_DIR"] == "/data"
