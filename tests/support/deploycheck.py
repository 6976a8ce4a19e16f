"""Schema validation of the deployment files, offline: `python -m tests.support.deploycheck`.

- docker-compose.yml: check-jsonschema (PyPI) against the compose-spec schema vendored in
  infra/schemas/compose-spec.json.
- infra/k8s: each kustomization is rendered by `build()` (a subset of Kustomize: resources,
  namespace, images, labels, strategic-merge patches by kind and name, secretGenerator from env
  files; anything else is an error, so a kustomization cannot silently use what is not rendered
  here), then every resource is validated strictly (unknown fields are errors): built-in kinds by
  kubernetes-validate (PyPI; it ships the Kubernetes JSON schemas), KEDA's ScaledObject by the
  schema vendored from KEDA's CRD (infra/schemas/keda/). kubeconform, kustomize and kubectl are Go
  binaries that are not on the package registries this project installs from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_SCHEMA = REPO / "infra" / "schemas" / "compose-spec.json"
K8S = REPO / "infra" / "k8s"
KEDA_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): REPO / "infra/schemas/keda/scaledobject-keda-v1alpha1.json"
}
# The oldest Kubernetes minor release the manifests promise to work on.
KUBERNETES_VERSION = "1.29"

KUSTOMIZATION_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "images",
        "labels",
        "patches",
        "secretGenerator",
        "generatorOptions",
    }
)


class KustomizeError(ValueError):
    pass


def kustomizations() -> list[Path]:
    """Every directory under infra/k8s with a kustomization.yaml."""
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge for what the overlays use: maps merge, lists of named maps merge by name,
    any other value is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in [*base, *patch])
    ):
        merged = {item["name"]: item for item in base}
        for item in patch:
            merged[item["name"]] = _merge(merged[item["name"]], item) if item["name"] in merged else item
        return list(merged.values())
    return patch


def _containers(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    yield from spec.get("containers", [])
    yield from spec.get("initContainers", [])


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def build(directory: Path, *, env_files: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """The resources `kustomize build directory` would output, for the subset described above.
    `env_files` substitutes a secretGenerator's env file (by name) that is not in the repository."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: fields not rendered by this check: {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        resources += build(target, env_files=env_files) if target.is_dir() else load_documents(target)
    for gen in spec.get("secretGenerator", []):
        if not spec.get("generatorOptions", {}).get("disableNameSuffixHash"):
            raise KustomizeError(f"{directory}: secretGenerator needs generatorOptions.disableNameSuffixHash")
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            path = (env_files or {}).get(env, directory / env)
            data.update(_env_file(path))
        resources.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": gen["name"]},
                "type": gen.get("type", "Opaque"),
                "stringData": data,
            }
        )
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path:` (strategic merge) is rendered")
        for doc in load_documents(directory / patch["path"]):
            matches = [
                i
                for i, r in enumerate(resources)
                if r["kind"] == doc["kind"] and r["metadata"]["name"] == doc["metadata"]["name"]
            ]
            if len(matches) != 1:
                raise KustomizeError(f"{patch['path']}: patches {len(matches)} resources")
            resources[matches[0]] = _merge(resources[matches[0]], doc)
    for label in spec.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] != "Namespace":
                resource["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for resource in resources:
            for container in _containers(resource):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return resources


def resource_errors(resources: list[dict[str, Any]]) -> list[str]:
    import kubernetes_validate

    errors = []
    for resource in resources:
        key = (resource.get("apiVersion"), resource.get("kind"))
        what = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        schema_file = KEDA_SCHEMAS.get(key)  # type: ignore[arg-type]
        try:
            if schema_file is not None:
                jsonschema.validate(resource, json.loads(schema_file.read_text()))
            else:
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            errors.append(f"{what}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{what}: no schema for {key}")
    return errors


def example_env_files(directory: Path) -> dict[str, Path]:
    """A checkout has no credentials.env: validate with its .example beside it."""
    return {p.name.removesuffix(".example"): p for p in directory.glob("*.env.example")}


def k8s_errors() -> list[str]:
    errors = []
    for directory in kustomizations():
        try:
            resources = build(directory, env_files=example_env_files(directory))
        except (KustomizeError, KeyError, OSError) as exc:
            errors.append(f"{directory.relative_to(REPO)}: {exc}")
            continue
        errors += [f"{directory.relative_to(REPO)}: {e}" for e in resource_errors(resources)]
    return errors


def compose_check() -> subprocess.CompletedProcess[str]:
    """check-jsonschema on docker-compose.yml, offline (the schema is vendored)."""
    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(exe), "--schemafile", str(COMPOSE_SCHEMA), str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def main() -> int:
    compose = compose_check()
    print(compose.stdout + compose.stderr, end="")
    errors = k8s_errors()
    for error in errors:
        print(f"error: {error}")
    if not errors:
        print(f"ok -- {len(kustomizations())} kustomizations rendered and validated")
    return 1 if errors or compose.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
