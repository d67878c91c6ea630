"""The helm chart (helm/signalr-sidecar), rendered by the real Helm engine.

Each value set is rendered offline with helm-python-sdk and every object is
validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict). ServiceMonitor is a Prometheus Operator CRD with no schema there: it
is skipped by the schema check and its fields are asserted below instead.
"""

from __future__ import annotations

import base64
import json
import posixpath
import re

import pytest
import yaml
from helm_python import lint
from helm_python.errors import HelmError, HelmValuesError

import deploy_checks as dc
from deploy_checks import NAMESPACE, RELEASE

FULLNAME = f"{RELEASE}-signalr-sidecar"

JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "RSA",
                "kid": "test-key",
                "use": "sig",
                "alg": "RS256",
                "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl"
                "UzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
                "e": "AQAB",
            }
        ]
    }
)

ROUTES = """\
[[hubs]]
path = "/hubs/chat"
"""

# The value sets that matter (issue 8): name -> values.
VALUE_SETS = {
    "defaults": {},
    "injected": {
        "mode": "injected",
        "backend": {
            "image": {"repository": "registry.example.com/support-center/api", "tag": "2.4.1"},
            "port": 8000,
            "command": ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"],
            "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "backend"}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "publisher": {"useRedisStreams": True, "redisPercentage": 10},
        },
        "routes": {"content": ROUTES},
        "ingress": {
            "enabled": True,
            "hosts": [
                {
                    "host": "support.example.com",
                    "paths": [{"path": "/hubs", "pathType": "Prefix"}],
                    "backendPaths": [{"path": "/api", "pathType": "Prefix"}],
                }
            ],
            "tls": [{"secretName": "support-tls", "hosts": ["support.example.com"]}],
        },
    },
    "jwt_jwks": {
        "auth": {
            "mode": "jwt",
            "jwt": {
                "jwks": JWKS,
                "issuer": "https://login.example.com/",
                "audience": "support-center",
                "leewaySeconds": 30,
            },
        },
        "cors": {"origins": ["https://support.example.com", "https://it.example.com"]},
    },
    "tls_redis": {
        "redis": {
            "existingSecret": "redis-tls",
            "existingSecretKey": "url",
            "tls": True,
            "cluster": True,
            "streams": ["events:chat", "events:ticket"],
            "groupPrefix": "support-rt",
            "orphanGroupIdleSeconds": 7200,
            "readWindowMs": 16,
        },
    },
    "hpa_on": {
        "hpa": {"enabled": True, "metric": "connections", "targetConnectionsPerPod": 800, "minReplicas": 3},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "ingress": {"enabled": True},
        "otel": {"endpoint": "http://jaeger-collector.observability:4317", "samplerRatio": 0.25},
        "drainWindowSeconds": 20,
    },
    # issue 20: the replica count under the name every chart uses.
    "replica_count": {"replicaCount": 3},
    # issue 20: TLS on the client port from a kubernetes.io/tls Secret, the
    # admin token from a Secret, and an Ingress in front.
    "tls_on": {
        "tls": {"enabled": True, "secretName": "signalr-example-com-tls"},
        "adminToken": {"existingSecret": "signalr-admin", "existingSecretKey": "bearer"},
        "ingress": {"enabled": True},
    },
}

# A values file copied from another chart (the layout `helm create` writes),
# keeping the keys this chart shares with it.
COPIED_VALUES = """\
replicaCount: 3
image:
  repository: registry.example.com/signalr-sidecar
  pullPolicy: IfNotPresent
  # Overrides the image tag whose default is the chart appVersion.
  tag: ""
imagePullSecrets: []
nameOverride: ""
fullnameOverride: ""
serviceAccount:
  create: true
  annotations: {}
  name: ""
podAnnotations: {}
podLabels: {}
service:
  type: ClusterIP
  port: 80
ingress:
  enabled: false
  className: ""
  annotations: {}
  hosts:
    - host: chart-example.local
      paths:
        - path: /
          pathType: ImplementationSpecific
  tls: []
resources: {}
nodeSelector: {}
tolerations: []
affinity: {}
"""


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request, render):
    objs, notes = render(VALUE_SETS[request.param])
    return request.param, objs, notes


# ------------------------------------------------------- every value set


def test_renders_valid_kubernetes_objects(rendered):
    name, objs, _ = rendered
    kinds = sorted(o["kind"] for o in objs)
    assert "Deployment" in kinds and kinds.count("Service") == 2, f"{name}: {kinds}"
    for obj in objs:
        assert obj["metadata"]["name"].startswith(FULLNAME)
        dc.validate_strict(obj)


def test_sidecar_deployment_probes_grace_security(rendered):
    _, objs, _ = rendered
    dep = dc.check_sidecar_deployment(objs)
    # The chart computes the grace period from the drain window.
    side = dc.sidecar_container(dep)
    drain = int(dc.env_value(side, "SIDECAR_DRAIN_WINDOW_SECONDS"))
    shutdown = int(dc.env_value(side, "SIDECAR_SHUTDOWN_TIMEOUT_SECONDS"))
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == drain + shutdown + 5
    # A config change rolls the pods (rollback is a values change).
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" in ann and "checksum/secret" in ann


def test_services_ingress_network_policy(rendered):
    name, objs, _ = rendered
    dep = dc.sidecar_deployment(objs)
    client, admin = dc.check_services(objs, dep)
    assert client["metadata"]["name"] == FULLNAME
    assert admin["metadata"]["name"] == f"{FULLNAME}-admin"
    dc.check_ingress(objs, dep, require=name in ("injected", "hpa_on"))
    dc.check_network_policy(objs, dep)
    pdb = dc.one(objs, "PodDisruptionBudget")
    assert dc.labels_match(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])


def test_notes_tell_how_to_reach_both_ports(rendered):
    _, _, notes = rendered
    assert f"port-forward svc/{FULLNAME} 8080:80" in notes
    assert f"port-forward svc/{FULLNAME}-admin 9090:9090" in notes
    assert f"-n {NAMESPACE}" in notes


# ------------------------------------------------------- per value set


def test_replica_count(render):
    objs, notes = render(VALUE_SETS["replica_count"])
    dep = dc.check_sidecar_deployment(objs)
    assert dep["spec"]["replicas"] == 3
    assert "DEPRECATED" not in notes
    objs, _ = render({"replicaCount": 1})
    assert dc.sidecar_deployment(objs)["spec"]["replicas"] == 1
    # The HPA still owns the count when it is on.
    objs, _ = render({"replicaCount": 3, "hpa": {"enabled": True}})
    assert "replicas" not in dc.sidecar_deployment(objs)["spec"]


def test_replicas_is_a_deprecated_alias_that_wins(render):
    objs, notes = render({"replicas": 5})
    for obj in objs:
        dc.validate_strict(obj)
    assert dc.sidecar_deployment(objs)["spec"]["replicas"] == 5
    assert "DEPRECATED: `replicas`" in notes and "(5)" in notes
    # Both set: the alias wins (an install that set it keeps its count on
    # upgrade) and NOTES say so with both numbers.
    objs, notes = render({"replicas": 4, "replicaCount": 3})
    assert dc.sidecar_deployment(objs)["spec"]["replicas"] == 4
    assert "set (4) and wins" in notes and "replicaCount (3)" in notes
    # In-process bus with several replicas through the alias: still warned.
    _, notes = render({"replicas": 3, "redis": {"enabled": False}})
    assert "WARNING: with the in-process bus" in notes
    _, notes = render({"replicas": 1, "replicaCount": 3, "redis": {"enabled": False}})
    assert "WARNING: with the in-process bus" not in notes


def test_values_copied_from_another_chart(chart, render):
    values = yaml.safe_load(COPIED_VALUES)
    chart.validate_schema(values)
    objs, _ = render(values)
    for obj in objs:
        dc.validate_strict(obj)
    dep = dc.sidecar_deployment(objs)
    assert dep["spec"]["replicas"] == 3
    assert dc.sidecar_container(dep)["image"] == "registry.example.com/signalr-sidecar:0.1.0"


def test_tls_on_client_port_from_secret(render):
    objs, notes = render(VALUE_SETS["tls_on"])
    dep = dc.check_sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    side = dc.sidecar_container(dep)
    cert = dc.env_value(side, "SIDECAR_TLS_CERT_FILE")
    key = dc.env_value(side, "SIDECAR_TLS_KEY_FILE")
    assert cert and key and posixpath.dirname(cert) == posixpath.dirname(key)
    # The Secret is mounted as a directory: a subPath mount would never see
    # a renewed certificate (the kubelet swaps the directory's contents).
    [mount] = [m for m in side["volumeMounts"] if m["mountPath"] == posixpath.dirname(cert)]
    assert mount.get("readOnly") is True
    assert "subPath" not in mount and "subPathExpr" not in mount
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "signalr-example-com-tls"
    files = {i["key"]: posixpath.join(mount["mountPath"], i["path"]) for i in volume["secret"]["items"]}
    assert files == {"tls.crt": cert, "tls.key": key}
    # Probes stay on the plain-HTTP admin port.
    assert side["readinessProbe"]["httpGet"].get("scheme", "HTTP") == "HTTP"
    # The Ingress speaks HTTPS to pods that serve TLS.
    ing = dc.one(objs, "Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert "https://127.0.0.1:8080/hubs/chat" in notes
    assert 'Secret "signalr-example-com-tls"' in notes
    # The chart makes no Secret for a certificate it does not hold.
    assert not any(s["metadata"]["name"] == "signalr-example-com-tls" for s in dc.of_kind(objs, "Secret"))


def test_tls_off_by_default(render):
    objs, notes = render({"ingress": {"enabled": True}})
    dep = dc.sidecar_deployment(objs)
    side = dc.sidecar_container(dep)
    env = dc.env_map(side)
    assert "SIDECAR_TLS_CERT_FILE" not in env and "SIDECAR_TLS_KEY_FILE" not in env
    assert not [v for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert "nginx.ingress.kubernetes.io/backend-protocol" not in dc.one(objs, "Ingress")["metadata"]["annotations"]
    assert "http://127.0.0.1:8080/hubs/chat" in notes


def test_admin_token_from_secret(render):
    objs, notes = render(VALUE_SETS["tls_on"])
    side = dc.sidecar_container(dc.sidecar_deployment(objs))
    token = dc.env_map(side)["SIDECAR_ADMIN_TOKEN"]
    assert token == {"name": "SIDECAR_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": "signalr-admin", "key": "bearer"}}}
    assert 'Secret "signalr-admin" (key "bearer")' in notes
    objs, _ = render({"adminToken": {"existingSecret": "signalr-admin"}})
    side = dc.sidecar_container(dc.check_sidecar_deployment(objs))
    assert dc.env_map(side)["SIDECAR_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "signalr-admin", "key": "token"}
    objs, notes = render({})
    assert "SIDECAR_ADMIN_TOKEN" not in dc.env_map(dc.sidecar_container(dc.sidecar_deployment(objs)))
    assert "no token" in notes


def test_defaults(render):
    objs, _ = render({})
    dep = dc.sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["signalr-sidecar"]
    side = pod["containers"][0]
    assert side["image"] == "ghcr.io/example/signalr-sidecar:0.1.0"
    assert dep["spec"]["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] == 40
    env = dc.env_map(side)
    # Redis Streams on, URL from the chart's Secret.
    ref = env["SIDECAR_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = dc.one(objs, "Secret")
    assert ref["name"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == "redis://redis:6379/0"
    assert env["SIDECAR_REDIS_CLUSTER"]["value"] == "false"
    assert env["SIDECAR_AUTH"]["value"] == "none"
    # Routes and schemas: the image's defaults, no override.
    assert "SIDECAR_ROUTES" not in env and "SIDECAR_SCHEMAS_DIR" not in env
    assert not dc.of_kind(objs, "ConfigMap")
    # No tracing endpoint configured: no OTEL_* settings at all.
    assert not [n for n in env if n.startswith("OTEL_")]
    assert not dc.of_kind(objs, "HorizontalPodAutoscaler")
    assert not dc.of_kind(objs, "ServiceMonitor")
    assert not dc.of_kind(objs, "Ingress")
    sa = dc.one(objs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_injected_mode_renders_backend_beside_sidecar(render):
    objs, _ = render(VALUE_SETS["injected"])
    dep = dc.sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["backend", "signalr-sidecar"]
    backend = pod["containers"][0]
    assert backend["image"] == "registry.example.com/support-center/api:2.4.1"
    assert backend["ports"] == [{"name": "backend", "containerPort": 8000, "protocol": "TCP"}]
    benv = dc.env_map(backend)
    assert benv["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "db"
    # The publisher in the backend talks to the sidecar in the same pod.
    assert benv["EVENT_TRANSPORT_SIDECAR_URL"]["value"] == "http://127.0.0.1:9090"
    assert benv["EVENT_TRANSPORT_USE_REDIS_STREAMS"]["value"] == "true"
    assert benv["EVENT_TRANSPORT_REDIS_PERCENTAGE"]["value"] == "10"
    assert benv["EVENT_TRANSPORT_FALLBACK_TO_HTTP"]["value"] == "true"
    side = dc.sidecar_container(dep)
    assert (
        benv["EVENT_TRANSPORT_REDIS_URL"]["valueFrom"]
        == dc.env_map(side)["SIDECAR_REDIS_URL"]["valueFrom"]
    )
    # Routing file from a ConfigMap, mounted where SIDECAR_ROUTES points.
    routes_path = dc.env_value(side, "SIDECAR_ROUTES")
    cm = dc.one(objs, "ConfigMap")
    assert cm["data"]["routes.toml"].strip() == ROUTES.strip()
    _assert_file_from_configmap(pod, side, routes_path, cm, "routes.toml")
    # The client Service also carries the backend port; the Ingress sends
    # /api there and /hubs to the sidecar, never to the admin port.
    client = next(s for s in dc.of_kind(objs, "Service") if s["metadata"]["name"] == FULLNAME)
    assert {p["name"]: p["targetPort"] for p in client["spec"]["ports"]} == {"http": "http", "backend": "backend"}
    ing = dc.one(objs, "Ingress")
    paths = {p["path"]: p["backend"]["service"]["port"]["name"] for p in ing["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/hubs": "http", "/api": "backend"}
    assert ing["spec"]["tls"][0]["secretName"] == "support-tls"
    # The NetworkPolicy lets the backend's port in too.
    np = dc.one(objs, "NetworkPolicy")
    assert {p["port"] for p in np["spec"]["ingress"][0]["ports"]} == {8080, 8000}


def _assert_file_from_configmap(pod, container, file_path, cm, key):
    mount = next(m for m in container["volumeMounts"] if file_path.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    items = {i["key"]: i["path"] for i in volume["configMap"]["items"]}
    assert mount["mountPath"] + "/" + items[key] == file_path


def test_jwt_with_jwks(render):
    objs, _ = render(VALUE_SETS["jwt_jwks"])
    dep = dc.sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    side = dc.sidecar_container(dep)
    env = dc.env_map(side)
    assert env["SIDECAR_AUTH"]["value"] == "jwt"
    assert env["SIDECAR_JWT_ISSUER"]["value"] == "https://login.example.com/"
    assert env["SIDECAR_JWT_AUDIENCE"]["value"] == "support-center"
    assert env["SIDECAR_JWT_LEEWAY_SECONDS"]["value"] == "30"
    assert env["SIDECAR_CORS_ORIGINS"]["value"] == "https://support.example.com,https://it.example.com"
    assert "SIDECAR_JWT_SECRET" not in env  # JWKS only, no HS256 secret
    cm = dc.one(objs, "ConfigMap")
    assert json.loads(cm["data"]["jwks.json"]) == json.loads(JWKS)
    _assert_file_from_configmap(pod, side, env["SIDECAR_JWKS_FILE"]["value"], cm, "jwks.json")


def test_jwt_with_hs256_secret(render):
    objs, _ = render({"auth": {"mode": "jwt", "jwt": {"secret": "s3cr3t-for-tests"}}})
    side = dc.sidecar_container(dc.check_sidecar_deployment(objs))
    ref = dc.env_map(side)["SIDECAR_JWT_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = dc.one(objs, "Secret")
    assert ref["name"] == secret["metadata"]["name"]
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == "s3cr3t-for-tests"
    objs, _ = render({"auth": {"mode": "jwt", "jwt": {"existingSecret": "idp", "existingSecretKey": "hs256"}}})
    side = dc.sidecar_container(dc.sidecar_deployment(objs))
    assert dc.env_map(side)["SIDECAR_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "idp", "key": "hs256"}


def test_tls_redis_from_existing_secret(render):
    objs, notes = render(VALUE_SETS["tls_redis"])
    side = dc.sidecar_container(dc.sidecar_deployment(objs))
    env = dc.env_map(side)
    assert env["SIDECAR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-tls", "key": "url"}
    assert env["SIDECAR_REDIS_CLUSTER"]["value"] == "true"
    assert env["SIDECAR_STREAMS"]["value"] == "events:chat,events:ticket"
    assert env["SIDECAR_GROUP_PREFIX"]["value"] == "support-rt"
    assert env["SIDECAR_ORPHAN_GROUP_IDLE_SECONDS"]["value"] == "7200"
    assert env["SIDECAR_READ_WINDOW_MS"]["value"] == "16"
    assert not dc.of_kind(objs, "Secret"), "the chart must not create a Secret when one exists"
    assert "rediss://" in notes and '"redis-tls"' in notes
    assert '"support-rt:<pod name>"' in notes


def test_tls_redis_rejects_plain_url(render):
    objs, _ = render({"redis": {"url": "rediss://:pw@redis.example:6380/0", "tls": True}})
    assert dc.one(objs, "Secret")
    with pytest.raises(HelmError, match="rediss://"):
        render({"redis": {"url": "redis://:pw@redis.example:6379/0", "tls": True}})


def test_hpa_on_connections_and_service_monitor(render):
    objs, _ = render(VALUE_SETS["hpa_on"])
    dep = dc.check_sidecar_deployment(objs)
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 20 + 25 + 5
    hpa = dc.one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == 3
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "sidecar_connections"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "800"}

    # ServiceMonitor (CRD, not schema-validated): scrapes /metrics on the
    # admin port of the admin Service, in the release namespace.
    sm = dc.one(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [
        {"port": "admin", "path": "/metrics", "scheme": "http", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    selected = [s for s in dc.of_kind(objs, "Service") if dc.labels_match(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in selected] == [f"{FULLNAME}-admin"]

    env = dc.env_map(dc.sidecar_container(dep))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://jaeger-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc"
    assert env["OTEL_SERVICE_NAME"]["value"] == FULLNAME
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"


def test_hpa_on_cpu(render):
    objs, _ = render({"hpa": {"enabled": True}})
    for obj in objs:
        dc.validate_strict(obj)
    [metric] = dc.one(objs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    # Injected: CPU utilization spans both containers, so the backend needs a CPU request.
    objs, _ = render({**VALUE_SETS["injected"], "hpa": {"enabled": True}})
    dep = dc.sidecar_deployment(objs)
    assert all(c["resources"]["requests"]["cpu"] for c in dep["spec"]["template"]["spec"]["containers"])


def test_rollback_is_a_values_change(render):
    """SC-006: redis.enabled=false is the in-process bus, on both sides."""
    values = json.loads(json.dumps(VALUE_SETS["injected"]))
    values["redis"] = {"enabled": False}
    objs, notes = render(values)
    for obj in objs:
        dc.validate_strict(obj)
    dep = dc.check_sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    side = dc.sidecar_container(dep)
    env = dc.env_map(side)
    assert not [n for n in env if n.startswith("SIDECAR_REDIS")]
    benv = dc.env_map(pod["containers"][0])
    assert benv["EVENT_TRANSPORT_USE_REDIS_STREAMS"]["value"] == "false"
    assert "EVENT_TRANSPORT_REDIS_URL" not in benv
    assert benv["EVENT_TRANSPORT_SIDECAR_URL"]["value"] == "http://127.0.0.1:9090"
    assert not dc.of_kind(objs, "Secret")
    assert "in-process bus" in notes and "WARNING" in notes
    # The publisher's own switch alone, with Redis still on.
    values = json.loads(json.dumps(VALUE_SETS["injected"]))
    values["backend"]["publisher"]["useRedisStreams"] = False
    objs, _ = render(values)
    benv = dc.env_map(dc.sidecar_deployment(objs)["spec"]["template"]["spec"]["containers"][0])
    assert benv["EVENT_TRANSPORT_USE_REDIS_STREAMS"]["value"] == "false"


def test_grace_period_override_must_exceed_the_shutdown_timeout(render):
    objs, _ = render({"terminationGracePeriodSeconds": 60, "drainWindowSeconds": 30, "shutdownTimeoutSeconds": 40})
    assert dc.sidecar_deployment(objs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60
    with pytest.raises(HelmError, match="terminationGracePeriodSeconds"):
        render({"terminationGracePeriodSeconds": 12, "drainWindowSeconds": 10})
    # Longer than the drain, but shorter than the process's own deadline.
    with pytest.raises(HelmError, match="shutdownTimeoutSeconds"):
        render({"terminationGracePeriodSeconds": 28, "drainWindowSeconds": 10, "shutdownTimeoutSeconds": 25})


def test_a_drain_window_the_shutdown_deadline_cannot_hold_is_refused(render):
    # The binary refuses to start (exit 64) unless SIDECAR_SHUTDOWN_TIMEOUT_SECONDS
    # is longer than SIDECAR_DRAIN_WINDOW_SECONDS: a release with a longer drain
    # window than the default deadline would crash-loop every pod.
    with pytest.raises(HelmError, match="shutdownTimeoutSeconds"):
        render({"drainWindowSeconds": 30})
    with pytest.raises(HelmError, match="shutdownTimeoutSeconds"):
        render({"drainWindowSeconds": 25, "shutdownTimeoutSeconds": 25})
    objs, _ = render({"drainWindowSeconds": 30, "shutdownTimeoutSeconds": 45})
    env = dc.env_map(dc.sidecar_container(dc.sidecar_deployment(objs)))
    assert int(env["SIDECAR_SHUTDOWN_TIMEOUT_SECONDS"]["value"]) > int(env["SIDECAR_DRAIN_WINDOW_SECONDS"]["value"])


def test_one_port_for_clients_and_admin_is_refused(render):
    # The binary exits 64 when SIDECAR_LISTEN and SIDECAR_ADMIN_LISTEN are
    # the same address (CONTRACT 2: nothing on the client port can publish
    # or read metrics): such a release would crash-loop every pod.
    with pytest.raises(HelmError, match="ports.client and ports.admin"):
        render({"ports": {"client": 9090, "admin": 9090}})
    objs, _ = render({"ports": {"client": 8081, "admin": 9091}})
    env = dc.env_map(dc.sidecar_container(dc.sidecar_deployment(objs)))
    assert env["SIDECAR_LISTEN"]["value"].endswith(":8081")
    assert env["SIDECAR_ADMIN_LISTEN"]["value"].endswith(":9091")


def test_pre_stop_sleep_keeps_serving_before_sigterm_and_counts_in_the_grace_period(render):
    dep = dc.sidecar_deployment(render({})[0])
    assert "lifecycle" not in dc.sidecar_container(dep), "no hook by default"
    objs, _ = render({"preStopSleepSeconds": 5, "drainWindowSeconds": 10, "shutdownTimeoutSeconds": 25})
    dep = dc.sidecar_deployment(objs)
    dc.validate_strict(dep)
    assert dc.sidecar_container(dep)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 10 + 25 + 5
    # An explicit grace period must cover the hook as well.
    with pytest.raises(HelmError, match="preStopSleepSeconds"):
        render({"preStopSleepSeconds": 10, "terminationGracePeriodSeconds": 35, "shutdownTimeoutSeconds": 25})


def test_a_private_redis_ca_is_mounted_and_named(render):
    side = dc.sidecar_container(dc.sidecar_deployment(render({})[0]))
    assert "SIDECAR_REDIS_CA_FILE" not in dc.env_map(side), "none by default: the public web roots"
    objs, _ = render({"redis": {"url": "rediss://redis:6380/0", "tls": True, "caConfigMap": "redis-ca"}})
    dep = dc.sidecar_deployment(objs)
    dc.validate_strict(dep)
    side = dc.sidecar_container(dep)
    path = dc.env_value(side, "SIDECAR_REDIS_CA_FILE")
    mount = next(m for m in side["volumeMounts"] if m["name"] == "redis-ca")
    assert path == mount["mountPath"] + "/ca.crt" and mount["readOnly"] is True
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "redis-ca")
    assert volume["configMap"] == {"name": "redis-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_network_policy_can_admit_prometheus_namespace(render):
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    objs, _ = render({"networkPolicy": {"adminFrom": [peer]}})
    dep = dc.sidecar_deployment(objs)
    dc.check_network_policy(objs, dep)
    admin_rule = dc.one(objs, "NetworkPolicy")["spec"]["ingress"][1]
    assert admin_rule["from"] == [{"podSelector": {}}, peer]


# ------------------------------------------------------- schema and errors


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"replicas": "three"}, "/replicas"),
        ({"auth": {"mode": "basic"}}, "/auth/mode"),
        ({"mode": "daemonset"}, "/mode"),
        ({"redis": {"url": "http://redis:6379"}}, "/redis/url"),
        ({"backend": {"publisher": {"redisPercentage": 150}}}, "/backend/publisher/redisPercentage"),
        ({"hpa": {"metric": "memory"}}, "/hpa/metric"),
        ({"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation"),
        ({"replica": 3}, "replica"),  # a typo of a top-level key
        ({"replicaCount": "three"}, "/replicaCount"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"redis": {"readWindowMs": 1001}}, "/redis/readWindowMs"),
        ({"tls": {"enabled": "yes"}}, "/tls/enabled"),
        ({"tls": {"secret": "x"}}, "secret"),
        ({"adminToken": {"existingSecret": "Not_A_Name"}}, "/adminToken/existingSecret"),
        ({"adminToken": {"value": "s3cr3t"}}, "value"),  # the token comes from a Secret only
    ],
)
def test_values_schema_rejects_bad_values(chart, bad, where):
    # Helm applies values.schema.json itself when it renders.
    with pytest.raises(HelmValuesError, match=where):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(HelmValuesError):
        chart.validate_schema(bad)


def test_values_schema_accepts_every_value_set(chart):
    for values in VALUE_SETS.values():
        chart.validate_schema(values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mode": "injected"}, "backend.image.repository"),
        ({"mode": "injected", "backend": {"image": {"repository": "api"}}}, "backend.image.tag"),
        ({"auth": {"mode": "jwt"}}, "auth.jwt"),
        ({"redis": {"url": ""}}, "redis.url"),
        (
            {"mode": "injected", "backend": {"image": {"repository": "api", "tag": "1"}}, "hpa": {"enabled": True}},
            "backend.resources.requests.cpu",
        ),
        ({"tls": {"enabled": True}}, "tls.secretName"),
        (
            {**VALUE_SETS["injected"], "tls": {"enabled": True, "secretName": "support-tls"}},
            "backendPaths",
        ),
    ],
)
def test_incomplete_values_fail_to_render(render, values, message):
    with pytest.raises(HelmError, match=message.replace(".", r"\.")):
        render(values)


def _leaves(values, prefix=""):
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path


def _lookup(values, dotted):
    node = values
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"README documents `{dotted}`, which values.yaml has not"
        node = node[part]
    return node


def test_chart_readme_documents_every_value_and_its_default():
    values = yaml.safe_load((dc.CHART_DIR / "values.yaml").read_text())
    readme = (dc.CHART_DIR / "README.md").read_text()
    section = readme.split("\n## Values\n", 1)[1]
    rows = re.findall(r"^\| `([A-Za-z0-9_.]+)` \| `([^`]*)` \| (.+) \|$", section, flags=re.M)
    documented = {name: default for name, default, _ in rows}
    assert len(documented) == len(rows), "a value is documented twice"
    # Every value is in a row (its own, or a whole object's).
    missing = [
        leaf for leaf in _leaves(values)
        if not any(leaf == name or leaf.startswith(name + ".") for name in documented)
    ]
    assert missing == [], f"values without a row in the chart README: {missing}"
    # Every row names a real value, with the default values.yaml gives it.
    for name, default in documented.items():
        assert yaml.safe_load(default) == _lookup(values, name), f"README default of `{name}` is `{default}`"


def test_helm_lint_is_clean():
    report = lint(dc.CHART_DIR, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_chart_metadata(chart):
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "signalr-sidecar"
    assert meta["appVersion"]
    names = {t["name"] for t in chart.templates}
    assert {"templates/_helpers.tpl", "templates/NOTES.txt"} <= names
    assert chart.schema is not None
