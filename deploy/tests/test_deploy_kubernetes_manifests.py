"""The plain manifests in deploy/kubernetes/ (no helm): schema-valid, and
the same operational rules as the chart."""

from __future__ import annotations

import deploy_checks as dc


def objects():
    return dc.load_manifest_dir()


def test_every_manifest_is_a_valid_kubernetes_object():
    objs = objects()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        ["Deployment", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "Secret", "Service", "Service"]
    ), kinds
    for obj in objs:
        assert "namespace" not in obj["metadata"], "manifests are applied with kubectl -n"
        dc.validate_strict(obj)


def test_backend_pod_with_sidecar():
    objs = objects()
    dep = dc.check_sidecar_deployment(objs)
    pod = dep["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["backend", "signalr-sidecar"], names
    side = dc.sidecar_container(dep)
    env = dc.env_map(side)
    # Drain 10 s, shutdown timeout 25 s, grace 40 s.
    assert env["SIDECAR_DRAIN_WINDOW_SECONDS"]["value"] == "10"
    assert pod["terminationGracePeriodSeconds"] == 40
    # The Redis URL comes from the Secret that ships beside it.
    ref = env["SIDECAR_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = dc.one(objs, "Secret")
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"][ref["key"]].startswith(("redis://", "rediss://"))
    # Consumer group per pod: signalr-sidecar:<pod name>.
    assert env["SIDECAR_GROUP_PREFIX"]["value"] == "signalr-sidecar"
    # The backend's publisher posts to the sidecar in the same pod and reads
    # the same Redis URL.
    backend = pod["containers"][0]
    benv = dc.env_map(backend)
    assert benv["EVENT_TRANSPORT_SIDECAR_URL"]["value"] == "http://127.0.0.1:9090"
    assert benv["EVENT_TRANSPORT_REDIS_URL"]["valueFrom"] == env["SIDECAR_REDIS_URL"]["valueFrom"]
    for name in ("EVENT_TRANSPORT_USE_REDIS_STREAMS", "EVENT_TRANSPORT_REDIS_PERCENTAGE",
                 "EVENT_TRANSPORT_FALLBACK_TO_HTTP", "EVENT_TRANSPORT_DUAL_WRITE"):
        assert name in benv


def test_services_ingress_network_policy_pdb():
    objs = objects()
    dep = dc.sidecar_deployment(objs)
    client, admin = dc.check_services(objs, dep)
    assert admin["metadata"]["name"].endswith("-admin")
    dc.check_ingress(objs, dep, require=True)
    ing = dc.one(objs, "Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert {p["path"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]} == {"/hubs"}
    dc.check_network_policy(objs, dep)
    pdb = dc.one(objs, "PodDisruptionBudget")
    assert dc.labels_match(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
