"""Rendering the Helm chart offline and checking what it renders.

Helm runs in-process through helm-python-sdk (the Helm v4 Go SDK behind a C
ABI): no helm binary and no cluster. Manifests are checked against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate (strict: unknown
fields are errors), against small strict schemas for the CRDs the chart
can render, and against our own security policy.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable

import helm_python as helm
import jsonschema
import kubernetes_validate.utils as kvu
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "telenet"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest one kubernetes-validate ships schemas for.
KUBE_VERSIONS = ("1.25.0", "1.37.0")

SERVICES = ("ingress", "contacts", "conversations", "media", "dispatch", "reporting", "gateway")

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}

helm.disable_logging()

# libyaml's loader: the pure-Python one takes longer than rendering.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_values(path: Path) -> dict[str, Any]:
    return helm.values_from_yaml(path.read_text())


def min_kube_version(path: Path) -> str | None:
    """A ci/ values file may say `# Needs Kubernetes 1.30 or later` when it
    uses a newer API field; it is then validated from that version on."""
    m = re.search(r"^# Needs Kubernetes (\d+\.\d+) or later", path.read_text(), re.MULTILINE)
    return f"{m.group(1)}.0" if m else None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of several values files: maps merge, the rest is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_files(
    values: dict[str, Any],
    *,
    chart: Path = CHART,
    name: str = "telenet",
    namespace: str = "telenet",
) -> dict[str, str]:
    """`helm template`: template path -> rendered text (NOTES.txt included)."""
    with helm.Chart.load(str(chart)) as loaded:
        return loaded.render(values, name=name, namespace=namespace, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a render (not NOTES.txt, not test hooks)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or "/tests/" in path:
            continue
        for doc in yaml.load_all(text, Loader=YAML_LOADER):
            if doc:
                doc.setdefault("__source__", path)
                docs.append(doc)
    return docs


@functools.lru_cache(maxsize=64)
def _render_cached(values_json: str, chart: str, name: str, namespace: str) -> tuple[dict[str, Any], ...]:
    return tuple(manifests(render_files(json.loads(values_json), chart=Path(chart), name=name, namespace=namespace)))


def render(
    values: dict[str, Any], *, chart: Path = CHART, name: str = "telenet", namespace: str = "telenet"
) -> list[dict[str, Any]]:
    """The manifests of a render; the same values render once per run (the
    chart directory is read at each render, so a copied chart is its own key)."""
    cached = _render_cached(json.dumps(values, sort_keys=True), str(chart), name, namespace)
    return copy.deepcopy(list(cached))


def strip_source(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "__source__"}


def describe(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata", {})
    return f"{doc.get('kind')}/{meta.get('name')} ({doc.get('__source__', '?')})"


# --- Schema validation ------------------------------------------------------

# Strict schemas for the parts of the CRDs the chart renders: enough to catch
# a misspelt or misplaced field, which kubernetes-validate cannot (it has no
# schemas for CRDs and only warns).
_STR = {"type": "string"}
_STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "labels": _STRMAP,
        "annotations": _STRMAP,
    },
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _STRMAP, "matchExpressions": {"type": "array"}},
}
_ISSUER_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": _STR},
}
_CM_DURATION = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"}
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("cert-manager.io/v1", "Certificate"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["secretName", "issuerRef"],
                "additionalProperties": False,
                "properties": {
                    "secretName": _STR,
                    "commonName": _STR,
                    "isCA": {"type": "boolean"},
                    "dnsNames": {"type": "array", "items": _STR},
                    "ipAddresses": {"type": "array", "items": _STR},
                    "uris": {"type": "array", "items": _STR},
                    "usages": {
                        "type": "array",
                        "items": {
                            "enum": [
                                "digital signature",
                                "key encipherment",
                                "server auth",
                                "client auth",
                                "cert sign",
                                "crl sign",
                            ]
                        },
                    },
                    "duration": _CM_DURATION,
                    "renewBefore": _CM_DURATION,
                    "privateKey": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                            "size": {"type": "integer"},
                            "encoding": {"enum": ["PKCS1", "PKCS8"]},
                            "rotationPolicy": {"enum": ["Never", "Always"]},
                        },
                    },
                    "issuerRef": _ISSUER_REF,
                },
            },
        },
    },
    ("cert-manager.io/v1", "Issuer"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": False,
                "properties": {
                    "selfSigned": {"type": "object", "additionalProperties": False, "properties": {}},
                    "ca": {
                        "type": "object",
                        "required": ["secretName"],
                        "additionalProperties": False,
                        "properties": {"secretName": _STR},
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}},
                    },
                    "jobLabel": _STR,
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": _STR,
                                "path": _STR,
                                "scheme": {"enum": ["http", "https"]},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "relabelings": {"type": "array", "items": {"type": "object"}},
                                "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": _STR,
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "rules": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": _STR,
                                            "record": _STR,
                                            "expr": _STR,
                                            "for": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
                                            "labels": {"type": "object", "additionalProperties": _STR},
                                            "annotations": {"type": "object", "additionalProperties": _STR},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "parentRefs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "group": _STR,
                                "kind": _STR,
                                "namespace": _STR,
                                "name": _STR,
                                "sectionName": _STR,
                                "port": {"type": "integer"},
                            },
                        },
                    },
                    "hostnames": {"type": "array", "items": _STR},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "matches": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "path": {
                                                "type": "object",
                                                "additionalProperties": False,
                                                "properties": {
                                                    "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                                    "value": _STR,
                                                },
                                            }
                                        },
                                    },
                                },
                                "backendRefs": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["name", "port"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "name": _STR,
                                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                            "weight": {"type": "integer"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


class InvalidManifest(Exception):
    """A manifest the API server would reject (or that we cannot check)."""


@functools.cache
def _schema_file(path: str, version: str) -> Any:
    return kvu.schema_contents(path, version)


@functools.cache
def _validator(version: str, kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict validator for one kind, built once:
    kubernetes_validate.validate() re-reads the (large) definitions file
    on every call, which made validation the slowest check."""
    known = [v for v in kvu.all_versions() if kvu.major_minor(v) == kvu.major_minor(version)]
    if not known:
        raise kvu.VersionNotSupportedError(version=version)
    schema_dir = f"kubernetes-json-schema/v{known[-1]}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = _schema_file(f"{schema_dir}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError as e:
        raise kvu.SchemaNotFoundError(version=version, kind=kind, api_version=api_version) from e
    definitions = _schema_file(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate_manifest(doc: dict[str, Any], kube_version: str) -> None:
    """Raises InvalidManifest naming the object and the first problem."""
    body = strip_source(doc)
    key = (body.get("apiVersion"), body.get("kind"))
    if key in CRD_SCHEMAS:
        try:
            jsonschema.validate(body, CRD_SCHEMAS[key])
        except jsonschema.ValidationError as e:
            raise InvalidManifest(f"{describe(doc)}: {e.message} at {list(e.absolute_path)}") from e
        return
    try:
        validator = _validator(kube_version, str(body.get("kind")), str(body.get("apiVersion")))
    except kvu.SchemaNotFoundError as e:
        # A removed API version or an unknown kind: kubernetes-validate would
        # only warn, which must not pass.
        raise InvalidManifest(f"{describe(doc)}: no schema for {key} in Kubernetes {kube_version}") from e
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise InvalidManifest(f"{describe(doc)} (Kubernetes {kube_version}): {error.message} at {where}")


def validate_all(docs: Iterable[dict[str, Any]], versions: Iterable[str] = KUBE_VERSIONS) -> None:
    for version in versions:
        for doc in docs:
            validate_manifest(doc, version)


# --- Our own policy ---------------------------------------------------------


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    kind = doc.get("kind")
    spec = doc.get("spec", {})
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if kind in WORKLOAD_KINDS:
        return [spec["template"]["spec"]]
    return []


def policy_violations(docs: Iterable[dict[str, Any]]) -> list[str]:
    """What the chart promises about every pod it runs, checked field by field."""
    problems: list[str] = []
    for doc in docs:
        for pod in pod_specs(doc):
            where = describe(doc)
            psc = pod.get("securityContext", {})
            if pod.get("automountServiceAccountToken") is not False:
                problems.append(f"{where}: the service account token is mounted")
            if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
                problems.append(f"{where}: shares a host namespace")
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                name = f"{where} container {c.get('name')}"
                sc = c.get("securityContext", {})

                def effective(key: str) -> Any:
                    return sc.get(key, psc.get(key))

                if effective("runAsNonRoot") is not True:
                    problems.append(f"{name}: runAsNonRoot is not true")
                if effective("runAsUser") in (None, 0):
                    problems.append(f"{name}: runs as root (runAsUser {effective('runAsUser')})")
                if sc.get("privileged"):
                    problems.append(f"{name}: privileged")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{name}: allowPrivilegeEscalation is not false")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{name}: root filesystem is writable")
                caps = sc.get("capabilities", {})
                if "ALL" not in caps.get("drop", []):
                    problems.append(f"{name}: capabilities are not all dropped")
                if caps.get("add"):
                    problems.append(f"{name}: adds capabilities {caps['add']}")
                seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
                if seccomp.get("type") != "RuntimeDefault":
                    problems.append(f"{name}: seccomp profile is not RuntimeDefault")
                resources = c.get("resources", {})
                for section in ("requests", "limits"):
                    if "memory" not in resources.get(section, {}):
                        problems.append(f"{name}: no memory {section}")
                if "cpu" not in resources.get("requests", {}):
                    problems.append(f"{name}: no cpu request")
                if doc.get("kind") == "Deployment":
                    for probe in ("livenessProbe", "readinessProbe"):
                        if probe not in c:
                            problems.append(f"{name}: no {probe}")
    return problems


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def container(doc: dict[str, Any]) -> dict[str, Any]:
    return pod_specs(doc)[0]["containers"][0]


def env_of(doc: dict[str, Any]) -> dict[str, Any]:
    """A workload's first container's env: name -> value or valueFrom."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(doc).get("env", [])}
