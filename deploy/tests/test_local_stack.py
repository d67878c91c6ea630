"""Static checks of the local observability stack (deploy/local/).

There is no container engine on the test machine, so the compose file, the
Prometheus config and the Grafana provisioning are checked as files: they
parse, every image is pinned, the ports line up with the sidecar's, the
scrape target is the admin port, and every dashboard panel has a query. The
queries themselves are run against a real Prometheus by
test_dashboard_prometheus.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "deploy" / "local"
COMPOSE = LOCAL / "compose.yaml"
PROMETHEUS_YML = LOCAL / "prometheus.yml"
DASHBOARD = LOCAL / "grafana" / "dashboards" / "signalr-sidecar.json"
DATASOURCES = LOCAL / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = LOCAL / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"

ADMIN_PORT = 9090
CLIENT_PORT = 8080

# What operators must watch (seed 000, SC-007), as the metric each panel reads.
SC007_METRICS = (
    "sidecar_event_delivery_seconds_bucket",
    "sidecar_broadcast_seconds_bucket",
    "sidecar_events_consumed_total",
    "sidecar_events_delivered_total",
    "sidecar_events_dropped_total",
    "sidecar_events_coalesced_total",
    "sidecar_stream_lag",
    "sidecar_stream_pending",
    "sidecar_connections",
    "sidecar_slow_consumer_disconnects_total",
    "sidecar_redis_up",
    "sidecar_dead_letters_total",
    "sidecar_invocations_total",
)


# --- helpers -----------------------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict) -> dict[int, int]:
    """{container port: host port} of the short port syntax ("[ip:]host:container")."""
    out = {}
    for spec in service.get("ports") or []:
        parts = str(spec).split("/")[0].split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def mounts(service: dict) -> dict[str, Path]:
    """{container path: host path} of the bind mounts (relative to deploy/local)."""
    out = {}
    for spec in service.get("volumes") or []:
        source, target = str(spec).split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (LOCAL / source).resolve()
    return out


def dashboard_panels(dash: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def dashboard_exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dashboard_panels(dash) if p["type"] != "row" for t in p.get("targets", [])]


# --- compose -----------------------------------------------------------------


def test_compose_parses_and_has_the_five_services():
    compose = load_compose()
    assert set(compose["services"]) == {"redis", "sidecar", "jaeger", "prometheus", "grafana"}


def test_every_image_is_pinned_to_a_version():
    for name, service in load_compose()["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image"
        if "build" in service:
            # Built from this checkout: a local tag, never `latest`.
            assert not image.endswith(":latest") and ":" in image, f"{name}: {image}"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        assert re.match(r"^v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a full version"


def test_sidecar_is_built_from_the_repository_dockerfile():
    build = load_compose()["services"]["sidecar"]["build"]
    context = (LOCAL / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()
    assert build["dockerfile"] == "deploy/Dockerfile"


def test_sidecar_environment_points_at_redis_and_jaeger():
    services = load_compose()["services"]
    env = env_of(services["sidecar"])
    assert env["SIDECAR_REDIS_URL"] == "redis://redis:6379"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc"  # 4317 is OTLP/gRPC
    assert env["OTEL_SERVICE_NAME"] == "signalr-sidecar"
    assert env["SIDECAR_LISTEN"].endswith(f":{CLIENT_PORT}")
    assert env["SIDECAR_ADMIN_LISTEN"].endswith(f":{ADMIN_PORT}")
    # Redis must answer before the sidecar creates its consumer groups.
    assert services["sidecar"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["redis"]


def test_published_ports():
    services = load_compose()["services"]
    assert published(services["sidecar"]) == {CLIENT_PORT: 8080, ADMIN_PORT: 9091}
    assert published(services["jaeger"]) == {4317: 4317, 4318: 4318, 16686: 16686}
    assert published(services["prometheus"]) == {9090: 9090}
    assert published(services["grafana"]) == {3000: 3000}
    assert published(services["redis"]) == {6379: 6379}
    host_ports = [h for s in services.values() for h in published(s).values()]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    for name, service in services.items():
        for spec in service.get("ports") or []:
            assert str(spec).startswith("127.0.0.1:"), f"{name}: {spec} is reachable from the network"


def test_jaeger_receives_otlp_on_every_interface():
    command = " ".join(load_compose()["services"]["jaeger"]["command"])
    assert "receivers.otlp.protocols.grpc.endpoint=0.0.0.0:4317" in command
    assert "receivers.otlp.protocols.http.endpoint=0.0.0.0:4318" in command


def test_every_bind_mount_exists():
    for name, service in load_compose()["services"].items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"


# --- prometheus --------------------------------------------------------------


def test_prometheus_scrapes_the_sidecar_admin_port():
    services = load_compose()["services"]
    assert mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == PROMETHEUS_YML
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "signalr-sidecar"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"sidecar:{ADMIN_PORT}"]
    admin_listen = env_of(services["sidecar"])["SIDECAR_ADMIN_LISTEN"]
    assert admin_listen.rsplit(":", 1)[1] == str(ADMIN_PORT)


def test_promtool_accepts_the_prometheus_config(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (apt-get install -y prometheus)")
    out = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- grafana -----------------------------------------------------------------


def test_grafana_provisions_prometheus_and_the_dashboard():
    services = load_compose()["services"]
    grafana_mounts = mounts(services["grafana"])
    assert grafana_mounts["/etc/grafana/provisioning"] == (LOCAL / "grafana" / "provisioning").resolve()

    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    [prom] = [d for d in datasources if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090"
    assert prom["isDefault"] is True
    [jaeger] = [d for d in datasources if d["type"] == "jaeger"]
    assert jaeger["url"] == "http://jaeger:16686"

    [provider] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    dashboards_path = provider["options"]["path"]
    assert grafana_mounts[dashboards_path] == DASHBOARD.parent.resolve()
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_path}/{DASHBOARD.name}"


def test_dashboard_is_valid_json_with_unique_panel_ids():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "signalr-sidecar"
    ids = [p["id"] for p in dashboard_panels(dash)]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels(dash):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_panel_has_a_query_on_the_dashboard_datasource():
    dash = json.loads(DASHBOARD.read_text())
    [ds_var] = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert ds_var["query"] == "prometheus"
    ds = {"type": "prometheus", "uid": "${%s}" % ds_var["name"]}
    panels = [p for p in dashboard_panels(dash) if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == ds, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['title']!r} has an empty query"
            assert target["datasource"] == ds, panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    ref_ids = [(p["id"], t["refId"]) for p in panels for t in p["targets"]]
    assert len(ref_ids) == len(set(ref_ids))


def test_dashboard_covers_every_sc007_metric():
    exprs = " ".join(dashboard_exprs(json.loads(DASHBOARD.read_text())))
    missing = [m for m in SC007_METRICS if not re.search(rf"\b{m}\b", exprs)]
    assert not missing, f"no panel reads {missing}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le) (rate(sidecar_event_delivery_seconds_bucket" in exprs
        assert f"histogram_quantile({quantile}, sum by (le) (rate(sidecar_broadcast_seconds_bucket" in exprs


def test_dashboard_variables_are_all_defined():
    dash = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in dash["templating"]["list"]}
    builtins = {"__rate_interval", "__interval", "__range"}
    for expr in dashboard_exprs(dash):
        for used in re.findall(r"\$\{?(\w+)", expr):
            assert used in names | builtins, f"{expr}: ${used} is not a dashboard variable"
    [instance] = [v for v in dash["templating"]["list"] if v["name"] == "instance"]
    assert instance["includeAll"] and instance["allValue"] == ".*"


def test_readme_names_what_to_open():
    readme = (LOCAL / "README.md").read_text()
    assert "docker compose -f deploy/local/compose.yaml up" in readme
    for url in ("http://localhost:3000", "http://localhost:9090", "http://localhost:16686"):
        assert url in readme
