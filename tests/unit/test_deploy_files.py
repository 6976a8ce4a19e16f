"""The deployment files, without running them: schema validation (the same as .ci/run), the KEDA
triggers against Herd's real queue names and the example herd file, the compose file's rules
(secrets only from the environment, healthchecks, a worker per model, the image's layers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from herd.herdfile.model import load_herd
from herd.queues import queue_for
from tests.support.deploy import compose, k8s_resources
from tests.support.deploycheck import compose_check, k8s_errors
from tests.support.harness import REPO

EXAMPLE_HERD = REPO / "infra" / "herd.example.yaml"
# The keys KEDA's redis scaler reads (kedacore/keda pkg/scalers/redis_scaler.go, redisMetadata);
# `<key>FromEnv` resolves <key> from the scale target's container environment.
KEDA_REDIS_KEYS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "username",
    "usernameFromEnv",
    "password",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
}


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = compose_check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate() -> None:
    assert k8s_errors() == []


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in k8s_resources() if r["kind"] == kind}


def test_a_keda_scaled_object_per_model_queue_with_the_real_queue_name_and_threshold() -> None:
    herd = load_herd(EXAMPLE_HERD)
    scaled = by_kind("ScaledObject")
    deployments = by_kind("Deployment")
    assert set(scaled) == {f"herd-worker-{m}" for m in herd.models}
    for model, config in herd.models.items():
        so = scaled[f"herd-worker-{model}"]["spec"]
        target = deployments[so["scaleTargetRef"]["name"]]
        container = target["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:4] == ["herd", "worker", "--model", model]
        assert "replicas" not in target["spec"], "KEDA owns the replica count"
        assert so["minReplicaCount"] == 0  # to zero when idle
        # One worker per model server: each server sees max_in_flight requests (docs/deploy.md).
        assert 1 <= so["maxReplicaCount"] <= len(config.endpoints)
        (trigger,) = so["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis"
        assert set(meta) <= KEDA_REDIS_KEYS
        assert meta["listName"] == queue_for(model)
        assert int(meta["listLength"]) == config.max_in_flight
        assert meta["activationListLength"] == "0"
        # KEDA reads the same Redis the worker consumes from: the variables its broker URL is built of.
        env = {e["name"]: e for e in container["env"]}
        assert {meta["addressFromEnv"], meta["passwordFromEnv"]} <= set(env)
        broker = env["HERD_BROKER_URL"]["value"]
        assert f"$({meta['addressFromEnv']})/{meta['databaseIndex']}" in broker
        assert f":$({meta['passwordFromEnv']})@" in broker


def test_k8s_herd_file_is_the_example_and_secrets_come_from_the_secret() -> None:
    base = yaml.safe_load((REPO / "infra/k8s/base/herd-file.yaml").read_text())
    assert base["data"]["herd.yaml"] == EXAMPLE_HERD.read_text()
    secret_keys = set(by_kind("Secret")["herd-credentials"]["stringData"])
    for resource in k8s_resources():
        for container in resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for env in container.get("env", []):
                if env["name"] in ("HERD_DATABASE_URL", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"):
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == "herd-credentials" and ref["key"] in secret_keys
    flower = by_kind("Deployment")["herd-flower"]["spec"]["template"]["spec"]["containers"][0]
    assert "FLOWER_BASIC_AUTH" in {e["name"] for e in flower["env"]}


def test_k8s_env_references_resolve() -> None:
    """$(VAR) in a value refers to a variable defined before it (Kubernetes expands only those)."""
    for resource in by_kind("Deployment").values():
        for container in resource["spec"]["template"]["spec"]["containers"]:
            defined: set[str] = set()
            for env in container["env"]:
                for ref in re.findall(r"\$\(([A-Z_]+)\)", env.get("value", "")):
                    assert ref in defined, f"{resource['metadata']['name']}: {env['name']} uses $({ref})"
                defined.add(env["name"])


SECRET = re.compile(r"\$\{(POSTGRES_PASSWORD|REDIS_PASSWORD|FLOWER_BASIC_AUTH|HF_TOKEN):\?[^}]*\}")


def test_compose_secrets_only_from_the_environment() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "HF_TOKEN"):
        uses = re.findall(rf"\$\{{{name}[^}}]*\}}", text)
        assert uses and all(SECRET.fullmatch(u) for u in uses), (name, uses)
    for service in compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|AUTH|TOKEN|DATABASE_URL|BROKER_URL", key):
                assert "${" in str(value), f"{key} is written inline"


def test_compose_services_have_healthchecks_and_workers_match_the_herd_files() -> None:
    services = compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if check.get("disable"):
            assert service.get("restart") == "no" and name == "migrate", (
                f"{name} must not disable its healthcheck"
            )
    workers: dict[str, set[str]] = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command[:2] == ["herd", "worker"]:
            assert name == f"worker-{command[3]}" and service["environment"]["WORKER_MODEL"] == command[3]
            assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
            assert "--wait-for-schema" in command
            (profile,) = service["profiles"]
            workers.setdefault(profile, set()).add(command[3])
    assert workers["gpu"] == set(load_herd(REPO / "infra/herd.compose.yaml").models)
    assert workers["cpu"] == set(load_herd(REPO / "infra/herd.cpu.yaml").models)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd


def test_compose_vllm_servers_reserve_distinct_gpus_and_are_the_herd_endpoints() -> None:
    services = compose()["services"]
    herd = load_herd(REPO / "infra/herd.compose.yaml")
    endpoints = {url for model in herd.models.values() for url in model.endpoints}
    gpus: list[str] = []
    for name, service in services.items():
        if service.get("image", "").startswith("vllm/"):
            assert f"http://{name}:8000/v1" in endpoints
            (device,) = service["deploy"]["resources"]["reservations"]["devices"]
            gpus += device["device_ids"]
    assert len(gpus) == len(set(gpus)) == 4
    cpu_herd = load_herd(REPO / "infra/herd.cpu.yaml")
    for model, config in cpu_herd.models.items():
        service = services[f"llm-{model}"]
        assert service["profiles"] == ["cpu"]
        assert service["command"][:4] == ["python", "-m", "herd.local.serve", model]
        assert config.endpoints == [f"http://llm-{model}:8000/v1"]


def test_prometheus_scrapes_the_metrics_service_and_the_housekeeper() -> None:
    config = yaml.safe_load((REPO / "infra/prometheus/prometheus.yml").read_text())
    targets = [target for job in config["scrape_configs"] for target in job["static_configs"][0]["targets"]]
    ports = {}
    for name in ("metrics", "housekeeper"):
        (port,) = [
            a.removeprefix("--port=")
            for a in compose()["services"][name]["command"]
            if a.startswith("--port=")
        ]
        ports[name] = port
    assert targets == [f"metrics:{ports['metrics']}", f"housekeeper:{ports['housekeeper']}"]


def test_the_housekeeper_runs_once_in_compose_and_kubernetes_so_workers_may_scale_to_zero() -> None:
    assert compose()["services"]["housekeeper"]["command"][:2] == ["herd", "housekeeper"]
    resources = k8s_resources()
    (deployment,) = [
        r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == "herd-housekeeper"
    ]
    assert deployment["spec"]["replicas"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["herd", "housekeeper"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    scaled = [r for r in resources if r["kind"] == "ScaledObject"]
    assert scaled and all(r["spec"]["minReplicaCount"] == 0 for r in scaled)


@pytest.mark.parametrize("path", ["infra/Dockerfile"])
def test_image_layers_dependencies_before_code_and_runs_as_non_root(path: str) -> None:
    lines = [line.strip() for line in (REPO / path).read_text().splitlines()]
    herd_stage = lines[lines.index("FROM deps AS herd") :]
    deps_stage = lines[: lines.index("FROM deps AS herd")]
    assert "COPY pyproject.toml ./" in deps_stage and not any(
        line.startswith("COPY services") for line in deps_stage
    )
    assert any(line.startswith("COPY services") for line in herd_stage)
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "USER herd"
    assert Path(REPO / ".dockerignore").read_text().count(".venv") == 1


def test_grafana_dashboard_queries_only_metrics_the_exporter_serves() -> None:
    import json

    source = (REPO / "services/herd/observability/metrics.py").read_text()
    families = set(re.findall(r'"(herd_[a-z_]+)"', source))
    dashboard = json.loads((REPO / "infra/grafana/herd-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for name in {n for e in exprs for n in re.findall(r"herd_[a-z_]+", e)}:
        family = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert family in families, f"the dashboard queries {name}, which herd metrics does not serve"
