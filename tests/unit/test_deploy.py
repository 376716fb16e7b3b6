"""Every deploy file an operator copies is checked here (there is no Docker engine or
cluster to run them, so nothing pretends to):

- every YAML file parses; `deploy/compose.yaml` is valid against the Compose
  specification (check-jsonschema's vendored schema) and every Kubernetes
  manifest against the Kubernetes schemas (kubernetes-validate, strict), except
  KEDA's ScaledObject, whose schema no package ships: its target and queue are
  checked against the worker Deployment instead;
- every `backfill` command line in compose, Kubernetes and systemd files names a
  real command with options it has (click parses it, `--help` ends it);
- every BACKFILL_* variable they set is one the code reads;
- `backfill web` gets its token from a secret, listens where it is published,
  and is probed on paths a real app serves without the token (Prometheus
  annotations only invite a tokenless scrape where none is needed).
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from backfill.cli import COMMANDS, main
from backfill.config import Settings
from backfill.web.app import make_app

REPO = Path(__file__).parents[2]
DEPLOY = REPO / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
PASSED_THROUGH = {"worker"}  # `backfill worker` hands its options to `celery worker`
WEB_UNIT = DEPLOY / "systemd" / "backfill-web.service"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert DEPLOY / "compose.yaml" in files
    assert len(K8S) >= 6
    for path in files:
        assert documents(path), path


def test_compose_is_valid_against_the_compose_specification() -> None:
    done = subprocess.run(
        [
            str(CHECK_JSONSCHEMA),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path):
        if doc["kind"] == "ScaledObject":
            continue  # a KEDA CRD: checked below
        kubernetes_validate.validate(doc, "1.37.0", strict=True)  # raises what is wrong


def _k8s_docs() -> Iterator[dict[str, Any]]:
    for path in K8S:
        yield from documents(path)


def test_each_scaled_object_scales_a_worker_deployment_on_its_own_queue() -> None:
    docs = list(_k8s_docs())
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled
    for obj in scaled:
        target = deployments[obj["spec"]["scaleTargetRef"]["name"]]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        queue = args[args.index("-Q") + 1]
        (trigger,) = obj["spec"]["triggers"]
        assert (trigger["type"], trigger["metadata"]["listName"]) == ("redis", queue)


def _compose_command_lines() -> Iterator[list[str]]:
    services = documents(DEPLOY / "compose.yaml")[0]["services"]
    for service in services.values():
        if service.get("image", "").startswith("backfill") and "entrypoint" not in service:
            yield list(service["command"])


def _k8s_command_lines() -> Iterator[list[str]]:
    for doc in _k8s_docs():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            if container["image"].startswith("backfill") and "command" not in container:
                yield list(container["args"])


def _systemd_command_lines() -> Iterator[list[str]]:
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            match = re.match(r"Exec\w+=\S*/backfill (.*)", line)
            if match:
                yield shlex.split(match.group(1).replace("%i", "default").replace("%%H", "host"))


def command_lines() -> list[list[str]]:
    return [*_compose_command_lines(), *_k8s_command_lines(), *_systemd_command_lines()]


def test_every_backfill_command_line_in_the_deploy_files_exists() -> None:
    lines = command_lines()
    assert {line[0] for line in lines} >= {"coordinator", "worker", "db", "web"}
    for args in lines:
        assert args[0] in COMMANDS, args
        if args[0] in PASSED_THROUGH:
            continue
        done = CliRunner().invoke(main, [*args, "--help"])
        assert done.exit_code == 0, (args, done.output)


def test_every_backfill_variable_the_deploy_files_set_is_read_by_the_code() -> None:
    read = set()
    for source in (REPO / "backfill").rglob("*.py"):
        read |= set(re.findall(r"BACKFILL_[A-Z_]+", source.read_text()))
    named = set()
    for path in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.service"), *DEPLOY.glob("*.example")]:
        named |= set(re.findall(r"\bBACKFILL_[A-Z_]+(?==|:)", path.read_text()))
    assert named >= {"BACKFILL_DATABASE_URL", "BACKFILL_BROKER_URL", "BACKFILL_DAGS_FOLDER"}
    assert named <= read, sorted(named - read)


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _k8s_doc(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _compose_web() -> dict[str, Any]:
    service: dict[str, Any] = documents(DEPLOY / "compose.yaml")[0]["services"]["web"]
    return service


def _k8s_web() -> dict[str, Any]:
    pod = _k8s_doc("Deployment", "backfill-web")["spec"]["template"]["spec"]
    container: dict[str, Any]
    (container,) = pod["containers"]
    return container


def test_the_web_service_takes_its_token_from_a_secret() -> None:
    environment = _compose_web()["environment"]
    # From the operator's environment and required, as the other passwords: never a literal.
    assert re.fullmatch(r"\$\{BACKFILL_API_TOKEN:\?[^}]+\}", environment["BACKFILL_API_TOKEN"])
    # Setting `environment` replaces the shared one unless it merges it back in.
    shared = documents(DEPLOY / "compose.yaml")[0]["x-backfill"]["environment"]
    assert environment.items() >= shared.items()

    (token,) = [e for e in _k8s_web()["env"] if e["name"] == "BACKFILL_API_TOKEN"]
    assert token["valueFrom"] == {"secretKeyRef": {"name": "backfill-secrets", "key": "api-token"}}
    assert "BACKFILL_API_TOKEN" not in _k8s_doc("ConfigMap", "backfill-config")["data"]

    unit = WEB_UNIT.read_text()
    assert "EnvironmentFile=/etc/backfill/backfill.env" in unit
    assert "BACKFILL_API_TOKEN=" not in unit
    # The example names it and sets none: a token shipped in a file is no secret.
    example = (DEPLOY / "backfill.env.example").read_text()
    assert re.search(r"^# BACKFILL_API_TOKEN=$", example, re.M)


def test_the_web_listens_where_it_is_published() -> None:
    # In a container or a pod, the port mapping and the Service reach the
    # container's own address, never its loopback.
    command = list(_compose_web()["command"])
    assert _option(command, "--host") == "0.0.0.0"
    # ... and the host publishes it on its loopback only (a TLS proxy exposes it).
    assert _compose_web()["ports"] == [f"127.0.0.1:8080:{_option(command, '--port')}"]

    args = _k8s_web()["args"]
    assert _option(args, "--host") == "0.0.0.0"
    assert [(p["name"], str(p["containerPort"])) for p in _k8s_web()["ports"]] == [
        ("http", _option(args, "--port"))
    ]
    pod_labels = _k8s_doc("Deployment", "backfill-web")["spec"]["template"]["metadata"]["labels"]
    service = _k8s_doc("Service", "backfill-web")["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["ports"]] == ["http"]

    (unit,) = [line for line in _systemd_command_lines() if line[0] == "web"]
    assert _option(unit, "--host") == "127.0.0.1"  # behind a reverse proxy on the host


def _probe_paths() -> Iterator[str]:
    """The paths the web's probes and healthcheck request (a tcpSocket probe: none)."""
    container = _k8s_web()
    probes = [container[k] for k in ("readinessProbe", "livenessProbe") if k in container]
    assert len(probes) == 2
    for probe in probes:
        get = probe.get("httpGet")
        if get is None:
            assert probe["tcpSocket"]["port"] == "http"
            continue
        assert get["port"] == "http"
        assert "httpHeaders" not in get  # no token slipped into the probe
        yield get["path"]
    healthcheck = " ".join(_compose_web()["healthcheck"]["test"])
    ((port, path),) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[^'\"\s]*)", healthcheck)
    assert port == _option(list(_compose_web()["command"]), "--port")
    yield path


async def _statuses(settings: Settings, requests: list[tuple[str, dict[str, str]]]) -> list[int]:
    transport = httpx.ASGITransport(app=make_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
        return [(await client.get(path, headers=headers)).status_code for path, headers in requests]


def test_the_web_probes_need_no_token(tmp_path: Path) -> None:
    """Probed with a token configured, as deployed: the kubelet and the healthcheck send none."""
    paths = list(_probe_paths())
    token = "0123456789abcdef" * 4
    settings = Settings.from_env({"BACKFILL_HOME": str(tmp_path), "BACKFILL_API_TOKEN": token})
    bearer = {"Authorization": f"Bearer {token}"}
    # The token is enforced, so the probes pass because their paths are open.
    guarded = [("/api/v1/backfills", {}), ("/metrics", {}), ("/metrics", bearer)]
    *probed, api, metrics, scraped = asyncio.run(
        _statuses(settings, [*((path, {}) for path in paths), *guarded])
    )
    assert probed == [200] * len(paths), dict(zip(paths, probed, strict=True))
    assert api == 401
    assert metrics != 200  # refused (today a page's refusal: 303 to /login)
    assert scraped == 200


def test_prometheus_annotations_invite_only_scrapes_that_need_no_token() -> None:
    annotated = set()
    for doc in _k8s_docs():
        template = doc.get("spec", {}).get("template", {})
        annotations = template.get("metadata", {}).get("annotations", {})
        if "prometheus.io/port" not in annotations:
            continue
        (container,) = template["spec"]["containers"]
        args = container["args"]
        port = _option(args, "--metrics-port" if "--metrics-port" in args else "--port")
        assert annotations["prometheus.io/port"] == port
        assert port in {str(p["containerPort"]) for p in container["ports"]}
        # The usual annotation-driven job sends no credentials: it would scrape a
        # guarded /metrics into refusals.
        guarded = any(e["name"] == "BACKFILL_API_TOKEN" for e in container.get("env", []))
        assert annotations["prometheus.io/scrape"] == ("false" if guarded else "true")
        annotated.add(doc["metadata"]["name"])
    assert annotated == {"backfill-coordinator", "backfill-web"}
