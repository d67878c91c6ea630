"""The README's test command on a fresh Debian machine "with Rust, Node.js and
Python 3": scripts/test.sh must install what such a machine lacks before it
uses it. Debian packages npm apart from nodejs, and `python3 -m venv` apart
from python3 (python3-venv). Run in a scratch copy with stand-ins for the
tools, so nothing is installed here: apt-get only records what it was asked."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def stub(bin_dir: Path, name: str, body: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def run_install_steps(tmp_path: Path, tools: list[str], python3: str) -> tuple[str, str]:
    """Runs a copy of scripts/test.sh with only `tools` (plus the python3 stand-in)
    on PATH; (what apt-get was asked to install, standard error)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    (tmp_path / "tests" / "client").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "apt-get.log"
    stub(bin_dir, "apt-get", f'echo "$@" >> {record}')
    for tool in tools:
        stub(bin_dir, tool)
    stub(bin_dir, "python3", python3)
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["/bin/bash", str(tmp_path / "scripts" / "test.sh")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    # It stops at the first step past the installs (cargo is not on PATH).
    assert done.returncode != 0
    lines = record.read_text().splitlines() if record.exists() else []
    installed = " ".join(f" {line}".split(" install ", 1)[1] for line in lines if " install " in f" {line}")
    return installed, done.stderr


def test_npm_is_installed_when_node_comes_without_it(tmp_path):
    # Debian's nodejs package has no npm: `npm ci` would be "command not found".
    installed, stderr = run_install_steps(
        tmp_path, ["redis-server", "chromium", "prometheus", "curl", "node"], python3="exit 0"
    )
    assert "npm" in installed.split(), f"apt-get was asked for {installed!r}; stderr: {stderr}"


def test_venv_support_is_installed_when_python_lacks_it(tmp_path):
    # Debian's python3 without python3-venv: `python3 -m venv` fails (no ensurepip).
    installed, stderr = run_install_steps(
        tmp_path,
        ["redis-server", "chromium", "prometheus", "curl", "node", "npm"],
        python3='case "$*" in *ensurepip*|*venv*) exit 1;; esac; exit 0',
    )
    assert "python3-venv" in installed.split(), f"apt-get was asked for {installed!r}; stderr: {stderr}"


def test_nothing_is_installed_when_everything_is_there(tmp_path):
    installed, _ = run_install_steps(
        tmp_path, ["redis-server", "chromium", "prometheus", "curl", "node", "npm"], python3="exit 0"
    )
    assert installed == ""


def test_curl_is_installed_when_missing(tmp_path):
    # tests/readme_examples.rs runs the README's curl command; a minimal Debian has no curl.
    installed, stderr = run_install_steps(
        tmp_path, ["redis-server", "chromium", "prometheus", "node", "npm"], python3="exit 0"
    )
    assert installed.split()[-1:] == ["curl"], f"apt-get was asked for {installed!r}; stderr: {stderr}"
