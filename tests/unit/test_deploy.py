"""Every deploy file an operator copies is checked here (there is no Docker engine or
cluster to run them, so nothing pretends to):

- every YAML file parses; `deploy/compose.yaml` is valid against the Compose
  specification (check-jsonschema's vendored schema) and every Kubernetes
  manifest against the Kubernetes schemas (kubernetes-validate, strict), except
  KEDA's ScaledObject, whose schema no package ships: its target and queue are
  checked against the worker Deployment instead;
- every `backfill` command line in compose, Kubernetes and systemd files names a
  real command with options it has (click parses it, `--help` ends it);
- every BACKFILL_* variable they set is one the code reads.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from backfill.cli import COMMANDS, main

REPO = Path(__file__).parents[2]
DEPLOY = REPO / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
PASSED_THROUGH = {"worker"}  # `backfill worker` hands its options to `celery worker`


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_every_yaml_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert DEPLOY / "compose.yaml" in files
    assert len(K8S) >= 5
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
    assert {line[0] for line in lines} >= {"coordinator", "worker", "db"}
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
