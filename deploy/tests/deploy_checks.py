"""Shared helpers for the deployment tests (chart and plain manifests).

Rendering uses the real Helm engine (the `helm-python-sdk` package ships
Helm's Go SDK as a native library); validation uses `kubernetes-validate`
in strict mode (unknown fields are errors) against the newest Kubernetes
release whose OpenAPI schemas that package ships.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from kubernetes_validate import utils as kv_utils

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "signalr-sidecar"
MANIFEST_DIR = REPO / "deploy" / "kubernetes"

# Release name and namespace the chart tests render with.
RELEASE = "rt"
NAMESPACE = "support"

CLIENT_PORT = 8080
ADMIN_PORT = 9090
SHUTDOWN_MARGIN_SECONDS = 5
SIDECAR_CONTAINER = "signalr-sidecar"

# Every setting the binary reads: the README's settings table is the one list
# (a hook checks that every SIDECAR_* name in src/ is in the README); any other
# SIDECAR_* name in a manifest is a typo the binary would silently ignore.
def _readme_settings() -> frozenset:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("\n## Settings", 1)[1].split("\n## ", 1)[0]
    return frozenset(re.findall(r"^\| `(SIDECAR_[A-Z0-9_]+)`", table, flags=re.M))


SIDECAR_SETTINGS = _readme_settings()
# Binary defaults, used when a manifest leaves a setting out.
DEFAULT_DRAIN_WINDOW_SECONDS = 10
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 25

# The schemas are big JSON files (~2 MB of definitions) that
# kubernetes-validate re-reads for every object; reading each once keeps the
# suite at a few seconds. Same files, same validator, same strictness.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)

KUBERNETES_VERSION = kv_utils.latest_version()

# CRDs have no schema in kubernetes-validate (it ships core Kubernetes only):
# objects of these API groups are not schema-validated; their tests assert
# the fields that matter instead.
CRD_GROUPS = ("monitoring.coreos.com",)


# Plain-language notes printed at the end of the run (see conftest.py).
NOTES: list[str] = []


# --------------------------------------------------------------------- loading


def parse_documents(text: str, source: str) -> list[dict[str, Any]]:
    objs = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        assert isinstance(doc, dict), f"{source}: a document is not a mapping: {doc!r}"
        assert "apiVersion" in doc and "kind" in doc, f"{source}: object without apiVersion/kind"
        objs.append(doc)
    return objs


def load_manifest_dir(directory: Path = MANIFEST_DIR) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    assert files, f"no manifests in {directory}"
    for f in files:
        objs.extend(parse_documents(f.read_text(), str(f)))
    return objs


# ------------------------------------------------------------------ validation


def is_crd_kind(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"].split("/")[0] in CRD_GROUPS


def validate_strict(obj: dict[str, Any]) -> None:
    """Validate one object against the Kubernetes OpenAPI schema (strict)."""
    if is_crd_kind(obj):
        # Not in kubernetes-validate's schemas (a CRD); see CRD_GROUPS.
        return
    try:
        kv_utils.validate(obj, KUBERNETES_VERSION, strict=True)
    except kv_utils.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata'].get('name')} is not a valid Kubernetes "
            f"{e.version} object (strict): {path}: {e.message}"
        ) from None
    except kv_utils.SchemaNotFoundError as e:
        raise AssertionError(f"no schema for {obj['apiVersion']} {obj['kind']}: {e.message}") from None


# ------------------------------------------------------------------- accessors


def of_kind(objs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container: dict[str, Any], name: str) -> str | None:
    e = env_map(container).get(name)
    return None if e is None else e.get("value")


def sidecar_deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    deps = [
        d
        for d in of_kind(objs, "Deployment")
        if any(c["name"] == SIDECAR_CONTAINER for c in d["spec"]["template"]["spec"]["containers"])
    ]
    assert len(deps) == 1, f"expected one Deployment with a {SIDECAR_CONTAINER} container, found {len(deps)}"
    return deps[0]


def sidecar_container(deployment: dict[str, Any]) -> dict[str, Any]:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == SIDECAR_CONTAINER:
            return c
    raise AssertionError("no sidecar container")


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe/target port (number or name) to a container port number."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def listen_port(container: dict[str, Any], name: str, default: int) -> int:
    value = env_value(container, name)
    if value is None:
        return default
    m = re.search(r":(\d+)$", value)
    assert m, f"{name}={value!r} is not host:port"
    return int(m.group(1))


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ the checks


def check_sidecar_deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """Probes, ports, grace period, consumer group, env names, security."""
    dep = sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    side = sidecar_container(dep)

    admin = listen_port(side, "SIDECAR_ADMIN_LISTEN", ADMIN_PORT)
    client = listen_port(side, "SIDECAR_LISTEN", CLIENT_PORT)
    assert admin == ADMIN_PORT and client == CLIENT_PORT
    assert {p["containerPort"] for p in side["ports"]} == {CLIENT_PORT, ADMIN_PORT}

    # Probes: liveness /healthz and readiness /readyz, both on the admin port.
    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = side.get(probe_name)
        assert probe, f"sidecar has no {probe_name}"
        http = probe.get("httpGet")
        assert http, f"{probe_name} is not an HTTP probe"
        assert http["path"] == path, f"{probe_name} hits {http['path']}, not {path}"
        assert container_port(side, http["port"]) == admin, f"{probe_name} is not on the admin port"

    # SIGTERM: the grace period outlasts the drain window plus a margin.
    drain = int(env_value(side, "SIDECAR_DRAIN_WINDOW_SECONDS") or DEFAULT_DRAIN_WINDOW_SECONDS)
    shutdown = int(env_value(side, "SIDECAR_SHUTDOWN_TIMEOUT_SECONDS") or DEFAULT_SHUTDOWN_TIMEOUT_SECONDS)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    assert grace > drain + SHUTDOWN_MARGIN_SECONDS, f"grace {grace}s <= drain {drain}s + margin"
    assert grace > drain, f"grace {grace}s <= drain window {drain}s"
    assert grace >= shutdown, f"grace {grace}s < shutdown timeout {shutdown}s"

    # One consumer group per pod: the instance id is the pod name.
    inst = env_map(side).get("SIDECAR_INSTANCE_ID")
    assert inst is not None, "SIDECAR_INSTANCE_ID is not set"
    assert inst.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"

    # Only settings the binary reads.
    for name in env_map(side):
        if name.startswith("SIDECAR_"):
            assert name in SIDECAR_SETTINGS, f"unknown setting {name}"
        else:
            assert name.startswith("OTEL_"), f"unexpected environment variable {name} on the sidecar"

    # The Redis URL (it may hold a password) never appears in plain text.
    redis = env_map(side).get("SIDECAR_REDIS_URL")
    if redis is not None:
        assert "value" not in redis, "SIDECAR_REDIS_URL is inline; it belongs in a Secret"
        assert redis["valueFrom"]["secretKeyRef"]["name"]
    for secret_setting in ("SIDECAR_JWT_SECRET", "SIDECAR_ADMIN_TOKEN"):
        ref = env_map(side).get(secret_setting)
        if ref is not None:
            assert "value" not in ref, f"{secret_setting} is inline; it belongs in a Secret"
            assert ref["valueFrom"]["secretKeyRef"]["name"]

    assert side.get("resources", {}).get("requests"), "sidecar has no resource requests"
    assert side["resources"].get("limits", {}).get("memory"), "sidecar has no memory limit"

    check_pod_security(dep)
    return dep


def check_pod_security(dep: dict[str, Any]) -> None:
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    assert pod.get("automountServiceAccountToken") is False, "a service account token is mounted"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        assert uid is None or uid != 0, f"{where}: runs as root"
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert sc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem is writable"
        assert sc.get("privileged") in (None, False), f"{where}: privileged"
        caps = sc.get("capabilities", {})
        assert "ALL" in caps.get("drop", []), f"{where}: capabilities not dropped"
        assert not caps.get("add"), f"{where}: capabilities added"
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp is not RuntimeDefault"


def _service_target(service: dict[str, Any], port_ref: dict[str, Any]) -> Any:
    for p in service["spec"]["ports"]:
        if ("name" in port_ref and p.get("name") == port_ref["name"]) or (
            "number" in port_ref and p["port"] == port_ref["number"]
        ):
            return p.get("targetPort", p["port"])
    raise AssertionError(f"Service {service['metadata']['name']} has no port {port_ref}")


def check_services(objs: list[dict[str, Any]], dep: dict[str, Any]) -> tuple[dict, dict]:
    """A client Service without the admin port, and a separate admin Service."""
    side = sidecar_container(dep)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    services = [s for s in of_kind(objs, "Service") if labels_match(s["spec"].get("selector", {}), pod_labels)]
    client = [s for s in services if any(_resolves_to(side, p.get("targetPort", p["port"]), CLIENT_PORT) for p in s["spec"]["ports"])]
    admin = [s for s in services if any(_resolves_to(side, p.get("targetPort", p["port"]), ADMIN_PORT) for p in s["spec"]["ports"])]
    assert len(client) == 1, "expected one Service for the client port"
    assert len(admin) == 1, "expected one Service for the admin port"
    client_svc, admin_svc = client[0], admin[0]
    assert client_svc is not admin_svc, "the admin port shares the client Service"
    assert not any(_resolves_to(side, p.get("targetPort", p["port"]), ADMIN_PORT) for p in client_svc["spec"]["ports"])
    assert admin_svc["spec"].get("type", "ClusterIP") == "ClusterIP", "the admin Service is exposed outside the cluster"
    assert [p.get("name") for p in admin_svc["spec"]["ports"]] == ["admin"], "the admin port is not named 'admin'"
    return client_svc, admin_svc


def _resolves_to(container: dict[str, Any], target: Any, port: int) -> bool:
    try:
        return container_port(container, target) == port
    except AssertionError:
        return False  # a port of another container (the backend)


def check_ingress(objs: list[dict[str, Any]], dep: dict[str, Any], require: bool = True) -> None:
    """Never routes to the admin port; sticky cookie and long timeouts."""
    ingresses = of_kind(objs, "Ingress")
    if not ingresses:
        assert not require, "no Ingress rendered"
        return
    side = sidecar_container(dep)
    services = {s["metadata"]["name"]: s for s in of_kind(objs, "Service")}
    for ing in ingresses:
        routed_to_client = False
        backends = []
        if "defaultBackend" in ing["spec"]:
            backends.append(ing["spec"]["defaultBackend"])
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backends.append(path["backend"])
        assert backends, "Ingress routes nowhere"
        for b in backends:
            svc_ref = b["service"]
            svc = services.get(svc_ref["name"])
            assert svc is not None, f"Ingress routes to unknown Service {svc_ref['name']}"
            target = _service_target(svc, svc_ref["port"])
            assert not _resolves_to(side, target, ADMIN_PORT), "Ingress routes to the admin port"
            assert target != "admin" and target != ADMIN_PORT
            routed_to_client |= _resolves_to(side, target, CLIENT_PORT)
        assert routed_to_client, "Ingress does not route to the client port"

        ann = ing["metadata"].get("annotations", {})
        assert ann.get("nginx.ingress.kubernetes.io/affinity") == "cookie", "no sticky cookie"
        assert ann.get("nginx.ingress.kubernetes.io/session-cookie-name")
        for t in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(ann[f"nginx.ingress.kubernetes.io/{t}"]) >= 3600, f"{t} too short for WebSockets"


def check_network_policy(objs: list[dict[str, Any]], dep: dict[str, Any]) -> None:
    """Admin port only from inside the namespace; client port from anywhere."""
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    policies = [
        p for p in of_kind(objs, "NetworkPolicy")
        if labels_match(p["spec"]["podSelector"].get("matchLabels", {}), pod_labels)
    ]
    assert len(policies) == 1, "expected one NetworkPolicy for the sidecar pods"
    spec = policies[0]["spec"]
    assert "Ingress" in spec["policyTypes"]
    client_open = False
    admin_rules = []
    for rule in spec.get("ingress", []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if not ports:
            raise AssertionError("a rule admits every port")
        if ADMIN_PORT in ports or "admin" in ports:
            admin_rules.append(rule)
        if CLIENT_PORT in ports and not rule.get("from"):
            client_open = True
    assert client_open, "the client port is not open to everyone"
    assert admin_rules, "no rule for the admin port"
    for rule in admin_rules:
        peers = rule.get("from")
        assert peers, "the admin port is open to everyone"
        for peer in peers:
            assert "ipBlock" not in peer, "the admin port is open to an IP block"
            if "namespaceSelector" not in peer:
                assert "podSelector" in peer  # a pod of this namespace
            else:
                # another namespace only when named explicitly
                assert peer["namespaceSelector"], "the admin port is open to every namespace"
        assert CLIENT_PORT not in {p["port"] for p in rule["ports"]}
