"""Documentation that must not drift: every chart value documented (and
the README table current), every configuration key of the binary in the
chart's schema and in docs/operations.md, every metric listed."""

from __future__ import annotations

import json
import re

import pytest

import chart as chartlib
import configkeys
import valuesdoc

OPERATIONS = chartlib.REPO / "docs" / "operations.md"


def test_every_value_is_documented() -> None:
    assert valuesdoc.undocumented(valuesdoc.VALUES.read_text()) == []


def test_a_planted_undocumented_value_is_found() -> None:
    text = valuesdoc.VALUES.read_text() + "\nsurprise:\n  knob: 3\n"
    assert valuesdoc.undocumented(text) == ["surprise.knob"]


def test_chart_readme_table_is_current() -> None:
    readme = valuesdoc.README.read_text()
    assert valuesdoc.with_table(readme, valuesdoc.table(valuesdoc.VALUES.read_text())) == readme, (
        "run python deploy/tools/valuesdoc.py --write"
    )


def test_the_binary_has_configuration_keys() -> None:
    paths = [k.path for k in configkeys.keys()]
    for expected in ("database_url", "grpc_server.shutdown_grace", "dispatch.concurrency", "gateway.listen"):
        assert expected in paths


def test_schema_and_operations_guide_follow_the_code() -> None:
    assert json.loads(configkeys.SCHEMA.read_text())["properties"]["settings"] == configkeys.settings_schema(), (
        "run python deploy/tools/configkeys.py --write"
    )
    assert OPERATIONS.read_text() == configkeys.operations_with_table(), "run python deploy/tools/configkeys.py --write"


def test_every_key_is_a_setting_or_set_by_the_chart() -> None:
    schema = json.loads(configkeys.SCHEMA.read_text())["properties"]["settings"]
    for key in configkeys.keys():
        if configkeys.is_chart_managed(key.path) or key.path in configkeys.SECRETS:
            continue
        node = schema
        for part in key.path.split("."):
            assert part in node.get("properties", {}), f"{key.path} cannot be set through `settings`"
            node = node["properties"][part]


def test_every_key_is_described() -> None:
    assert [k.path for k in configkeys.keys() if not k.doc] == []


def test_chart_managed_keys_are_really_set(minimal_values: dict) -> None:
    config = chartlib.by_kind(chartlib.render(minimal_values), "ConfigMap")["telenet"]["data"]
    managed = [k for k in configkeys.keys() if configkeys.is_chart_managed(k.path)]
    secret_backed = {"database_url", "bus_url", "presence_url"}
    # Set on the pods that mount their Secret, only when it is given (see
    # test_chart.py's test_datastore_tls_files_come_from_their_secrets).
    only_with_their_secret = ("database_tls.", "bus_tls.", "presence_tls.")
    for key in managed:
        if key.path in secret_backed or key.path == "media.blob_dir":
            continue
        if key.path.startswith(only_with_their_secret):
            continue
        assert key.env in config, f"{key.path} is said to be set by the chart but is not"


def test_every_metric_is_listed() -> None:
    source = chartlib.REPO / "crates" / "kit" / "src" / "metrics.rs"
    if not source.exists():
        pytest.skip("no metrics module in this tree")
    text = source.read_text()
    declared = re.findall(r"registry\.register\(\s*\"([a-z_]+)\",", text)
    assert declared, "no metrics found: the pattern no longer matches metrics.rs"
    counters = set(re.findall(r"inner\.(\w+)\.clone\(\)", text))
    assert counters
    guide = OPERATIONS.read_text()
    for name in declared:
        full = f"telenet_{name}"
        assert f"`{full}`" in guide or f"`{full}_total`" in guide, f"{full} is not in docs/operations.md"


def test_operations_guide_covers_what_an_operator_needs() -> None:
    guide = OPERATIONS.read_text()
    for heading in (
        "## Install with Helm",
        "## Configuration",
        "## Scaling",
        "## Upgrades and migrations",
        "## Backups",
        "## Metrics",
        "## Traces",
        "### Security checks",
    ):
        assert heading in guide, heading
    for needed in ("traceparent", "OTEL_EXPORTER_OTLP_ENDPOINT", "helm install", "telenet migrate", "prefetch"):
        assert needed in guide, needed
