"""Shared fixtures: the chart rendered once per `ci/` values file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import chart as chartlib  # noqa: E402


@pytest.fixture(scope="session")
def ci_renders() -> dict[str, list[dict[str, Any]]]:
    """ci values file name -> rendered manifests."""
    return {p.name: chartlib.render(chartlib.load_values(p)) for p in chartlib.CI_VALUES}


@pytest.fixture(scope="session")
def minimal_values() -> dict[str, Any]:
    return chartlib.load_values(chartlib.CHART / "ci" / "minimal-values.yaml")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Fail loudly rather than run nothing.
    if not items:
        raise pytest.UsageError("no deploy checks were collected")
