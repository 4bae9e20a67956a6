"""The NetworkPolicies follow the code: each service declares the services
it calls (`CALLS`, enforced by its context at run time), the declarations
are generated into charts/telenet/files/calls.yaml, and the rendered
policies allow exactly those calls — no fewer (a call that would be dropped
by an enforcing network plugin), no more."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

import callgraph
import chart as chartlib
from chart import SERVICES, by_kind
from test_chart import with_values

HTTP_PORTS = {"ingress": ("webhooks", 8081), "gateway": ("http", 8080)}


# --- What the rendered policies allow -----------------------------------------


def _components(peers: list[dict[str, Any]]) -> set[str]:
    return {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers if "podSelector" in p}


def service_policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """service -> its NetworkPolicy, for the services rendered."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d.get("kind") == "NetworkPolicy" and d["metadata"]["labels"]["app.kubernetes.io/component"] in SERVICES
    }


def allowed(docs: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    """For each side (`egress`: what the caller's policy lets out,
    `ingress`: what the callee's lets in), the (caller, kind, callee)
    connections between services the policies allow, self-calls left out."""
    out: dict[str, set[tuple[str, str, str]]] = {"egress": set(), "ingress": set()}
    named = {name: service for service, (name, _) in HTTP_PORTS.items()}
    numbered = {number: service for service, (_, number) in HTTP_PORTS.items()}
    for service, policy in service_policies(docs).items():
        spec = policy["spec"]
        for rule in spec["egress"]:
            for port in rule.get("ports", []):
                if port["port"] == 50051:
                    out["egress"] |= {(service, "grpc", t) for t in _components(rule.get("to", [])) if t != service}
                elif port["port"] in numbered:
                    targets = _components(rule.get("to", []))
                    assert targets <= {numbered[port["port"]]}, f"{service} may reach port {port['port']} of {targets}"
                    out["egress"] |= {(service, "http", t) for t in targets}
        for rule in spec["ingress"]:
            for port in rule["ports"]:
                if port["port"] == "grpc":
                    out["ingress"] |= {(f, "grpc", service) for f in _components(rule.get("from", [])) if f != service}
                elif port["port"] in named:
                    out["ingress"] |= {(f, "http", service) for f in _components(rule.get("from", []))}
    return out


def edges(graph: dict[str, list[callgraph.Call]]) -> set[tuple[str, str, str]]:
    """The connections of a declared graph (links open none)."""
    return {(c.caller, c.kind, c.service) for calls in graph.values() for c in calls if c.kind in callgraph.NETWORK_KINDS}


def mismatches(docs: list[dict[str, Any]], graph: dict[str, list[callgraph.Call]]) -> list[str]:
    """How the policies rendered differ from the declared calls: each
    call is let out by the caller's policy and let in by the callee's, for
    the services rendered (a subset is checked on its own side)."""
    present = set(service_policies(docs))
    found = []
    for side, have in allowed(docs).items():
        end = 0 if side == "egress" else 2
        want = {e for e in edges(graph) if e[end] in present}
        found += [f"{side}: {c} → {s} ({k}) declared, not allowed" for c, k, s in sorted(want - have)]
        found += [f"{side}: {c} → {s} ({k}) allowed, not declared" for c, k, s in sorted(have - want)]
    return found


# --- A copy of the chart or the sources with something changed ---------------


def chart_with_calls(tmp_path: Path, calls: str | None) -> Path:
    """The chart copied, with `calls` as its files/calls.yaml (None: none)."""
    copy = tmp_path / "telenet"
    shutil.copytree(chartlib.CHART, copy)
    target = copy / "files" / "calls.yaml"
    if calls is None:
        target.unlink()
    else:
        target.write_text(calls)
    return copy


def sources_with(tmp_path: Path, crate: str, old: str, new: str) -> Path:
    """services/*/Cargo.toml and src copied, `old` replaced by `new` in
    the sources of `crate`."""
    root = tmp_path / "services"
    for source in chartlib.REPO.joinpath("services").iterdir():
        if (source / "Cargo.toml").is_file():
            shutil.copytree(source / "src", root / source.name / "src")
            shutil.copy(source / "Cargo.toml", root / source.name / "Cargo.toml")
    changed = False
    for path in (root / crate / "src").rglob("*.rs"):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            changed = True
    assert changed, f"{old!r} is not in {crate}'s sources"
    return root


# --- The declarations, the generated graph and the rendered policies ------------


def test_every_service_declares_its_calls() -> None:
    graph = callgraph.declared()
    assert set(graph) == set(SERVICES)
    assert callgraph.Call("gateway", "grpc", "media") in graph["gateway"], "uploads and downloads"
    assert callgraph.Call("dispatch", "grpc", "media") in graph["dispatch"], "voice notes and download links"
    assert callgraph.Call("media", "grpc", "ingress") in graph["media"], "inbound attachments' channels"
    assert graph["contacts"] == [] and graph["reporting"] == []


def test_the_charts_graph_and_the_operations_guide_follow_the_code() -> None:
    assert callgraph.GRAPH.read_text() == callgraph.graph_yaml(), "run python deploy/tools/callgraph.py --write"
    assert callgraph.OPERATIONS.read_text() == callgraph.operations_with_calls(), (
        "run python deploy/tools/callgraph.py --write"
    )


def test_network_policies_allow_exactly_the_declared_calls(ci_renders: dict[str, list[dict[str, Any]]]) -> None:
    graph = callgraph.declared()
    checked = [name for name, docs in ci_renders.items() if service_policies(docs)]
    assert "minimal-values.yaml" in checked and "subset-values.yaml" in checked
    for name in checked:
        assert mismatches(ci_renders[name], graph) == [], name


def test_a_call_removed_from_a_declaration_is_noticed(tmp_path: Path, minimal_values: dict[str, Any]) -> None:
    # dispatch stops declaring media: the generated graph no longer matches
    # the chart's, and the policies rendered from the chart no longer match
    # the declarations.
    sources = sources_with(tmp_path, "dispatch", 'Call::grpc("media")', "")
    graph = callgraph.declared(sources)
    assert callgraph.Call("dispatch", "grpc", "media") not in graph["dispatch"]
    assert callgraph.graph_yaml(graph) != callgraph.GRAPH.read_text()
    assert callgraph.operations_with_calls(graph=graph) != callgraph.OPERATIONS.read_text()
    found = mismatches(chartlib.render(minimal_values), graph)
    assert "egress: dispatch → media (grpc) allowed, not declared" in found
    assert "ingress: dispatch → media (grpc) allowed, not declared" in found


def test_an_edge_missing_from_the_charts_graph_is_noticed(tmp_path: Path, minimal_values: dict[str, Any]) -> None:
    # The graph file loses gateway → media (as the chart once did): the
    # policies drop the call, which the declarations still make.
    text = callgraph.GRAPH.read_text()
    stale = text.replace("grpc: [conversations, ingress, contacts, reporting, media]", "grpc: [conversations, ingress, contacts, reporting]")
    assert stale != text
    docs = chartlib.render(minimal_values, chart=chart_with_calls(tmp_path, stale))
    found = mismatches(docs, callgraph.declared())
    assert found == [
        "egress: gateway → media (grpc) declared, not allowed",
        "ingress: gateway → media (grpc) declared, not allowed",
    ]


# --- HTTP calls, and a graph the chart cannot use ----------------------------------


def graph_text(**http: list[str]) -> str:
    """The current graph with these HTTP calls added."""
    graph = yaml.safe_load(callgraph.GRAPH.read_text())
    for caller, services in http.items():
        graph[caller]["http"] = services
    return yaml.safe_dump(graph)


def test_an_http_call_opens_the_callees_http_port_to_the_caller_only(tmp_path: Path, minimal_values: dict[str, Any]) -> None:
    docs = chartlib.render(minimal_values, chart=chart_with_calls(tmp_path, graph_text(media=["gateway"])))
    policies = by_kind(docs, "NetworkPolicy")
    ingress = policies["telenet-gateway"]["spec"]["ingress"]
    http = next(r for r in ingress if r["ports"][0]["port"] == "http")
    assert http["from"][0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert _components(http["from"]) == {"media"}
    egress = [r for r in policies["telenet-media"]["spec"]["egress"] if r.get("ports", [{}])[0].get("port") == 8080]
    assert [_components(r["to"]) for r in egress] == [{"gateway"}]
    assert not [r for r in policies["telenet-dispatch"]["spec"]["egress"] if r.get("ports", [{}])[0].get("port") == 8080]
    graph = callgraph.declared()
    graph["media"] = graph["media"] + [callgraph.Call("media", "http", "gateway")]
    assert mismatches(docs, graph) == []


def test_an_http_port_open_to_all_stays_open_to_all(tmp_path: Path, minimal_values: dict[str, Any]) -> None:
    values = with_values(minimal_values, **{"networkPolicy.ingressControllerFrom": []})
    docs = chartlib.render(values, chart=chart_with_calls(tmp_path, graph_text(media=["gateway"])))
    ingress = by_kind(docs, "NetworkPolicy")["telenet-gateway"]["spec"]["ingress"]
    http = next(r for r in ingress if r["ports"][0]["port"] == "http")
    assert "from" not in http, "naming the callers would shut out everyone else"


def test_an_http_call_of_a_service_without_an_http_port_is_refused(tmp_path: Path, minimal_values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmRenderError, match="dispatch calls media over HTTP, which has no HTTP port"):
        chartlib.render(minimal_values, chart=chart_with_calls(tmp_path, graph_text(dispatch=["media"])))


@pytest.mark.parametrize(
    ("calls", "error"),
    [
        (None, "files/calls.yaml is missing"),
        ("gateway:\n  grpc: [conversations]\n  http: []\n", "no entry for ingress"),
        (callgraph.GRAPH.read_text().replace("grpc: [contacts, ingress]", "grpc: [contacs, ingress]"), "conversations calls contacs, which is no service"),
        ("gateway: [\n", "missing or unreadable"),
    ],
    ids=["missing", "a service left out", "a misspelt service", "not YAML"],
)
def test_a_graph_the_chart_cannot_use_is_refused(
    tmp_path: Path, minimal_values: dict[str, Any], calls: str | None, error: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=error):
        chartlib.render(minimal_values, chart=chart_with_calls(tmp_path, calls))


def test_the_graph_is_packaged_with_the_chart() -> None:
    ignored = (chartlib.CHART / ".helmignore").read_text().split()
    assert not {"files/", "files", "*.yaml", "files/calls.yaml"} & set(ignored)


# --- Declarations the generator refuses -----------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ('pub const CALLS: &[Call] = &[Call::grpc("ingress"), Call::grpc("media")];', "", "0 `pub const CALLS"),
        ('Call::grpc("media")', 'Call::grpc(MEDIA)', "something other than"),
        ('Call::grpc("media")', 'Call::grpc("mediа")', "something other than"),
        ('Call::grpc("media")', 'Call::grpc("billing")', "dispatch declares a call of billing, which is no service"),
        ('Call::grpc("media")', 'Call::grpc("ingress")', "a call declared twice"),
        ('Call::grpc("media")', 'Call::grpc("dispatch")', "a call of itself"),
        ('Call::grpc("media")', 'Call::smtp("media")', "something other than|unknown kind"),
    ],
    ids=["no declaration", "a constant", "a lookalike letter", "no such service", "twice", "itself", "unknown kind"],
)
def test_a_declaration_the_generator_cannot_read_is_refused(tmp_path: Path, old: str, new: str, error: str) -> None:
    sources = sources_with(tmp_path, "dispatch", old, new)
    with pytest.raises(callgraph.DeclarationError, match=error):
        callgraph.declared(sources)
