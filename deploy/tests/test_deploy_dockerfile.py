"""deploy/Dockerfile and /.dockerignore.

The static checks always run. Where a container engine answers (`docker
info` or `podman info` succeeds) the image is also built from the repository
root and inspected; where none does, the run says so plainly at the end and
only the static checks have run (a normal pass).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest

import deploy_checks as dc

DOCKERFILE = dc.REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = dc.REPO / ".dockerignore"
BINARY = "/usr/local/bin/signalr-sidecar"
PROTOCOL_DIR = "/etc/signalr-sidecar/protocol"


# ------------------------------------------------------------------ parsing


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined, comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # comments (and parser directives) and blank lines
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    return out


def stages(text: str) -> list[dict]:
    result = []
    for word, args in instructions(text):
        if word == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append({"image": parts[0], "name": name, "steps": []})
        else:
            assert result, f"{word} before the first FROM"
            result[-1]["steps"].append((word, args))
    return result


def env_pairs(args: str) -> dict[str, str]:
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        assert sep, f"ENV {token!r}: use the KEY=value form"
        pairs[key] = value
    return pairs


def cargo_binary_name() -> str:
    """The binary Cargo builds: [[bin]] name, else the package name."""
    manifest = dc.REPO / "Cargo.toml"
    if not manifest.exists():
        return "signalr-sidecar"
    data = tomllib.loads(manifest.read_text())
    bins = [b["name"] for b in data.get("bin", []) if "name" in b]
    if "signalr-sidecar" in bins:
        return "signalr-sidecar"
    return bins[0] if bins else data["package"]["name"]


@pytest.fixture(scope="module")
def parsed():
    text = DOCKERFILE.read_text()
    return stages(text)


# ------------------------------------------------------------------ static


def test_multi_stage_with_pinned_base_images(parsed):
    assert len(parsed) >= 2, "expected a build stage and a runtime stage"
    for stage in parsed:
        image = stage["image"]
        assert "$" not in image, f"FROM {image}: pin the image in the FROM line"
        ref, _, digest = image.partition("@")
        name, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "")
        assert tag or digest, f"FROM {image}: no tag (that means latest)"
        assert tag != "latest", f"FROM {image}: latest is not a pinned version"
        assert re.search(r"\d", tag) or re.search(r"\d", name.split("/")[-1]) or digest, (
            f"FROM {image}: no explicit version in the tag or image name"
        )
    build, runtime = parsed[0], parsed[-1]
    assert re.fullmatch(r"rust:1\.\d+(\.\d+)?-slim-bookworm", build["image"]), build["image"]
    assert runtime["image"] == "gcr.io/distroless/cc-debian12:nonroot", runtime["image"]


def test_builds_release_binary_with_the_lockfile(parsed):
    build = parsed[0]
    steps = build["steps"]
    assert ("WORKDIR", "/src") in steps
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(r"cargo build\b[^&;]*--release", runs), "no cargo build --release"
    assert re.search(r"cargo build\b[^&;]*--locked", runs), "cargo build without --locked"


def test_runtime_stage_copies_binary_and_protocol(parsed):
    build, runtime = parsed[0], parsed[-1]
    binary = cargo_binary_name()
    assert binary == "signalr-sidecar"
    copies = [args.split() for word, args in runtime["steps"] if word == "COPY"]
    expected_src = f"/src/target/release/{binary}"
    bin_copy = [c for c in copies if c[-1] == BINARY]
    assert len(bin_copy) == 1, f"no COPY to {BINARY}"
    c = bin_copy[0]
    assert f"--from={build['name']}" in c, "the binary does not come from the build stage"
    assert c[-2] == expected_src, f"copies {c[-2]}, Cargo builds {expected_src}"
    assert c[-2].endswith(f"target/release/{binary}")
    proto = [c for c in copies if c[-1].rstrip("/") == PROTOCOL_DIR]
    assert proto and proto[0][-2].rstrip("/") == "/src/protocol", "default protocol files not copied"

    env = {}
    for word, args in runtime["steps"]:
        if word == "ENV":
            env.update(env_pairs(args))
    assert env["SIDECAR_ROUTES"] == f"{PROTOCOL_DIR}/routes.toml"
    assert env["SIDECAR_SCHEMAS_DIR"] == f"{PROTOCOL_DIR}/schemas"
    for name in env:
        if name.startswith("SIDECAR_"):
            assert name in dc.SIDECAR_SETTINGS, f"unknown setting {name}"
    # The files those defaults name exist in the repository's protocol/.
    repo_protocol = dc.REPO / "protocol"
    if (repo_protocol / "routes.toml").exists() or any(repo_protocol.glob("*.toml")):
        assert (repo_protocol / "routes.toml").is_file(), "protocol/routes.toml is missing"
        assert any((repo_protocol / "schemas").glob("*.json")), "protocol/schemas/ has no schema"
    else:
        dc.NOTES.append("protocol/routes.toml is not in the repository yet: its path was not checked")


def test_runs_as_non_root_without_a_shell(parsed):
    runtime = parsed[-1]
    users = [args for word, args in runtime["steps"] if word == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "runs as root"
    assert user == "65532", f"USER {users[-1]}: expected the distroless nonroot uid 65532"
    assert not [a for w, a in runtime["steps"] if w == "RUN"], "RUN in the runtime stage (it has no shell)"
    entry = [args for word, args in runtime["steps"] if word == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    assert json.loads(entry[-1]) == [BINARY], "ENTRYPOINT must be the exec form (no shell, PID 1 gets SIGTERM)"
    exposed = set()
    for word, args in runtime["steps"]:
        if word == "EXPOSE":
            exposed.update(args.split())
    assert {"8080", "9090"} <= exposed


def test_dockerignore_keeps_the_context_small():
    assert DOCKERIGNORE.is_file(), "no .dockerignore at the repository root"
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    normalized = {p.strip("/").removeprefix("**/") for p in patterns}
    for needed in ("target", ".git", ".venv", "node_modules"):
        assert needed in normalized, f".dockerignore does not exclude {needed}"
    for kept in ("Cargo.toml", "Cargo.lock", "src", "protocol"):
        assert kept not in normalized, f".dockerignore excludes {kept}, which the build needs"


# ------------------------------------------------------------------ engine


def _engine() -> str | None:
    for tool in ("docker", "podman"):
        if shutil.which(tool) is None:
            continue
        try:
            ok = subprocess.run([tool, "info"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return tool
    return None


def test_image_builds_where_an_engine_runs():
    engine = _engine()
    if engine is None:
        dc.NOTES.append(
            "no container engine here (`docker info` / `podman info` failed): "
            "the image was not built; only the static Dockerfile checks ran."
        )
        return
    if os.environ.get("DEPLOY_TESTS_SKIP_IMAGE_BUILD") == "1":
        dc.NOTES.append(f"{engine} answers, but DEPLOY_TESTS_SKIP_IMAGE_BUILD=1: the image was not built.")
        return
    tag = "signalr-sidecar:deploy-test"
    build = subprocess.run(
        [engine, "build", "-f", str(DOCKERFILE), "-t", tag, str(dc.REPO)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert build.returncode == 0, f"{engine} build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    inspect = subprocess.run([engine, "image", "inspect", tag], capture_output=True, text=True, check=True)
    config = json.loads(inspect.stdout)[0]["Config"]
    assert config["User"].split(":")[0] == "65532"
    assert config["Entrypoint"] == [BINARY]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["SIDECAR_ROUTES"] == f"{PROTOCOL_DIR}/routes.toml"
    assert {"8080/tcp", "9090/tcp"} <= set(config.get("ExposedPorts", {}))
    dc.NOTES.append(f"the image was built with {engine} and inspected ({tag}).")
