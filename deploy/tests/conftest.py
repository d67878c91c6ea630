"""Fixtures for the deployment tests (deploy/, helm/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The shared helpers sit beside this file; make them importable whatever
# import mode pytest runs in.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import deploy_checks  # noqa: E402


@pytest.fixture(scope="session")
def chart():
    from helm_python.chart import Chart

    with Chart.load(deploy_checks.CHART_DIR) as loaded:
        yield loaded


RELEASE = deploy_checks.RELEASE
NAMESPACE = deploy_checks.NAMESPACE


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> (objects, NOTES.txt text); a render error fails the test."""

    def _render(values: dict | None = None):
        out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
        objs, notes = [], ""
        for path, text in sorted(out.items()):
            if path.endswith("NOTES.txt"):
                notes = text
            elif path.endswith((".yaml", ".yml")):
                objs.extend(deploy_checks.parse_documents(text, path))
        return objs, notes

    return _render


def pytest_terminal_summary(terminalreporter):
    """Say plainly what the deployment tests could not do on this machine."""
    for note in deploy_checks.NOTES:
        terminalreporter.write_line(f"deploy/tests: {note}")
