"""The configuration keys of the `telenet` binary, read from its Rust
sources: the fields of `Config` (services/telenet/src/config.rs), following
nested structs into the modules and crates that define them, with each
field's type, doc comment and (where it is a plain literal) default.

Two generated artifacts come from it, so neither can drift from the code:
- the `settings` part of charts/telenet/values.schema.json (types, enums,
  durations; `additionalProperties: false`, so a misspelt key fails at
  `helm install`);
- the configuration table of docs/operations.md.

    python deploy/tools/configkeys.py            # one key per line
    python deploy/tools/configkeys.py --write    # rewrite both artifacts
    python deploy/tools/configkeys.py --check    # exit 1 when they are stale
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "services" / "telenet" / "src"
SCHEMA = REPO / "charts" / "telenet" / "values.schema.json"
OPERATIONS = REPO / "docs" / "operations.md"
START = "<!-- config:start -->"
END = "<!-- config:end -->"

# Keys the chart sets itself (values elsewhere in values.yaml, or fixed):
# they are not `settings`.
CHART_MANAGED = {
    "data_dir": "`/data` (an emptyDir; media's `persistence` volume)",
    "database_url": "`database.url` / `database.existingSecret`",
    "bus_url": "`rabbitmq.url` / `rabbitmq.existingSecret`",
    "presence_url": "`redis.url` / `redis.existingSecret`",
    "database_tls.ca_file": "`/etc/telenet/database-tls/ca.crt` when `database.tls.existingSecret` and `database.tls.caKey` are set",
    "database_tls.cert_file": "`/etc/telenet/database-tls/tls.crt` when `database.tls.existingSecret` and `database.tls.certKey` are set",
    "database_tls.key_file": "`/etc/telenet/database-tls/tls.key` when `database.tls.existingSecret` and `database.tls.keyKey` are set",
    "bus_tls.ca_file": "`/etc/telenet/bus-tls/ca.crt` when `rabbitmq.tls.existingSecret` and `rabbitmq.tls.caKey` are set",
    "bus_tls.cert_file": "`/etc/telenet/bus-tls/tls.crt` when `rabbitmq.tls.existingSecret` and `rabbitmq.tls.certKey` are set",
    "bus_tls.key_file": "`/etc/telenet/bus-tls/tls.key` when `rabbitmq.tls.existingSecret` and `rabbitmq.tls.keyKey` are set",
    "presence_tls.ca_file": "`/etc/telenet/presence-tls/ca.crt` when `redis.tls.existingSecret` and `redis.tls.caKey` are set",
    "presence_tls.cert_file": "`/etc/telenet/presence-tls/tls.crt` when `redis.tls.existingSecret` and `redis.tls.certKey` are set",
    "presence_tls.key_file": "`/etc/telenet/presence-tls/tls.key` when `redis.tls.existingSecret` and `redis.tls.keyKey` are set",
    "grpc_listen": "`0.0.0.0:50051`",
    "grpc_health_listen": "`0.0.0.0:50052` (the probes' port)",
    "grpc_tls.cert_file": "`/etc/telenet/grpc-tls/tls.crt`, from the service's Secret (`grpcTls`)",
    "grpc_tls.key_file": "`/etc/telenet/grpc-tls/tls.key`, from the service's Secret (`grpcTls`)",
    "grpc_tls.ca_file": "`/etc/telenet/grpc-tls/ca.crt`, from the service's Secret (`grpcTls`)",
    "grpc_tls.allow_plaintext": "`true` only with `grpcTls.enabled: false`",
    "grpc_auth.clients_file": "`/etc/telenet/grpc-clients/clients.toml` when there are `platformClients`",
    "metrics_listen": "`0.0.0.0:9090` (`metrics.enabled`)",
    "log_format": "`logs.format`",
    "seed": "`false`",
    "ingress.listen": "`0.0.0.0:8081`",
    "ingress.public_url": "`webhooks.publicUrl` (or the webhooks Ingress/HTTPRoute host)",
    "ingress.encryption.local_key": "`false` (the keys come from `channelSecrets.existingSecret`)",
    "gateway.listen": "`0.0.0.0:8080`",
    "media.blob_dir": "`/data/blobs` (inside `data_dir`)",
    "endpoints.*": "`https://<release>-telenet-<service>:50051` (`http://` without `grpcTls`), or `endpoints.<service>`",
}
# Descriptions and defaults for fields the sources leave undocumented or
# whose default is computed.
FALLBACK_DOCS = {
    "endpoints.*": (
        "Where this process reaches the {name} service's gRPC API (`http://host:port`); "
        "services run in the same process are reached on its own port.",
        "http://127.0.0.1:50051",
    ),
}
# Credentials: never in the ConfigMap; the chart reads them from a Secret.
SECRETS = {
    "media.s3.access_key_id": "`mediaS3.existingSecret` (key `mediaS3.accessKeyIdKey`)",
    "media.s3.secret_access_key": "`mediaS3.existingSecret` (key `mediaS3.secretAccessKeyKey`)",
    "media.download_urls.key": "`downloadLinks.existingSecret` (key `downloadLinks.keyKey`)",
    "media.download_urls.previous_keys": "`downloadLinks.existingSecret` (key `downloadLinks.previousKeysKey`, optional)",
    "ingress.encryption.keys": "`channelSecrets.existingSecret` (key `channelSecrets.keysKey`)",
    "ingress.encryption.current_key": "`channelSecrets.existingSecret` (key `channelSecrets.currentKeyKey`, optional)",
}

DURATION_PATTERN = "^(0|[0-9]+(ns|us|ms|s|m|h|d))$"

STRUCT_FIELD = re.compile(
    r"(?P<docs>(?:[ \t]*///[^\n]*\n)*)(?P<attrs>(?:[ \t]*#\[[^\n]*\]\n)*)[ \t]*pub\s+(?P<name>[a-z_][a-z0-9_]*)\s*:\s*(?P<type>[^,\n]+),"
)


@dataclass
class Key:
    path: str
    rust_type: str
    doc: str
    duration: bool
    enum: list[str] | None
    default: str | None

    @property
    def env(self) -> str:
        return "TELENET_" + self.path.upper().replace(".", "__")


def module_dir(type_path: str, here: Path) -> tuple[Path, str]:
    """Where a type named in a field lives: another crate (`telenet_x::…`)
    or this crate (`module::Type`, `Type`)."""
    parts = type_path.split("::")
    if parts[0].startswith("telenet_"):
        name = parts[0].removeprefix("telenet_")
        for parent in ("crates", "services"):
            if (REPO / parent / name / "src").is_dir():
                return REPO / parent / name / "src", parts[-1]
    crate = here
    while crate.name != "src" and crate != crate.parent:
        crate = crate.parent
    return crate, parts[-1]


@cache
def sources(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.rglob("*.rs")))


def braced(text: str, start: int) -> str:
    """The text between the `{` at `start` and its matching `}`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return text[start + 1 :]


@cache
def struct_body(directory: Path, name: str) -> str | None:
    m = re.search(r"pub struct " + re.escape(name) + r"\s*\{", sources(directory))
    if not m:
        return None
    return braced(sources(directory), m.end() - 1)


@cache
def enum_values(directory: Path, name: str) -> list[str] | None:
    m = re.search(
        r"(?P<attrs>(?:#\[[^\n]*\]\s*)*)pub enum " + re.escape(name) + r"\s*\{(?P<body>.*?)\n\}",
        sources(directory),
        re.DOTALL,
    )
    if not m:
        return None
    variants = re.findall(r"^\s*([A-Z][A-Za-z0-9]*)\s*,", m["body"], re.MULTILINE)
    if 'rename_all = "lowercase"' in m["attrs"]:
        return [v.lower() for v in variants]
    if 'rename_all = "snake_case"' in m["attrs"]:
        return [re.sub(r"(?<!^)([A-Z])", r"_\1", v).lower() for v in variants]
    return variants


def split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in body:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


@cache
def defaults(directory: Path, name: str) -> dict[str, str]:
    """`field: expr` of `impl Default for <name>`, where the expression is a
    literal this can read (numbers, arithmetic, strings, durations, enum
    variants, constants)."""
    text = sources(directory)
    m = re.search(r"impl Default for " + re.escape(name) + r"\s*\{", text)
    if not m:
        return {}
    body = braced(text, m.end() - 1)
    f = re.search(r"fn default\(\)\s*->\s*Self\s*\{", body)
    if f:
        body = braced(body, f.end() - 1)
    s = re.search(r"\bSelf\s*\{", body)
    if not s:
        return {}
    out: dict[str, str] = {}
    for part in split_top_level(braced(body, s.end() - 1)):
        field, _, expr = part.partition(":")
        value = literal(expr, directory)
        if value is not None:
            out[field.strip()] = value
    return out


def literal(expr: str, directory: Path | None = None) -> str | None:
    expr = " ".join(expr.split())
    if directory is not None and re.fullmatch(r"[A-Z][A-Z0-9_]*", expr):
        const = re.search(r"const " + expr + r"\s*:\s*\w+\s*=\s*([^;]+);", sources(directory))
        return literal(const[1]) if const else None
    m = re.fullmatch(r"Duration::from_(secs|millis)\(([0-9_]+)\)", expr)
    if m:
        return f"{int(m[2].replace('_', ''))}{'s' if m[1] == 'secs' else 'ms'}"
    m = re.fullmatch(r'(?:PathBuf::from\()?"([^"]*)"(?:\))?(?:\.into\(\)|\.to_owned\(\)|\.to_string\(\))?', expr)
    if m:
        return m[1]
    if expr in ("String::new()", "PathBuf::new()", "BTreeMap::new()"):
        return ""
    if expr in ("true", "false"):
        return expr
    if re.fullmatch(r"[0-9_ *+]+", expr):
        return str(eval(expr.replace("_", "")))  # digits and * + only
    m = re.fullmatch(r"(?:\w+::)*([A-Z]\w*)::([A-Z]\w*)", expr)
    if m:
        return m[2].lower()
    m = re.fullmatch(r"NonZero\w+::new\(([0-9_]+)\).*", expr)
    if m:
        return m[1].replace("_", "")
    m = re.fullmatch(r"SocketAddr::from\(\(\[(\d+), (\d+), (\d+), (\d+)\], (\d+)\)\)", expr)
    if m:
        return f"{m[1]}.{m[2]}.{m[3]}.{m[4]}:{m[5]}"
    return None


def doc_text(docs: str) -> str:
    lines = [line.strip().removeprefix("///").strip() for line in docs.splitlines() if line.strip()]
    return " ".join(lines)


def keys(directory: Path = ROOT, name: str = "Config", prefix: str = "") -> list[Key]:
    body = struct_body(directory, name)
    out: list[Key] = []
    if body is None:
        return out
    values = defaults(directory, name)
    for f in STRUCT_FIELD.finditer(body):
        path = f"{prefix}{f['name']}"
        rust_type = f["type"].strip()
        inner = re.sub(r"^Option<(.*)>$", r"\1", rust_type)
        target_dir, target = module_dir(inner, directory)
        nested = struct_body(target_dir, target)
        if nested is not None:
            out.extend(keys(target_dir, target, f"{path}."))
            continue
        doc, default = doc_text(f["docs"]), values.get(f["name"])
        for pattern, (fallback_doc, fallback_default) in FALLBACK_DOCS.items():
            if path == pattern or (pattern.endswith(".*") and path.startswith(pattern[:-1])):
                doc = doc or fallback_doc.format(name=path.rsplit(".", 1)[-1])
                default = default if default is not None else fallback_default
        out.append(
            Key(
                path=path,
                rust_type=rust_type,
                doc=doc,
                duration="duration" in f["attrs"],
                enum=enum_values(target_dir, target),
                default=default,
            )
        )
    return out


def is_chart_managed(path: str) -> bool:
    return path in CHART_MANAGED or any(k.endswith(".*") and path.startswith(k[:-1]) for k in CHART_MANAGED)


# --- The schema of `settings` -----------------------------------------------


def type_schema(key: Key) -> dict[str, Any]:
    t = re.sub(r"^Option<(.*)>$", r"\1", key.rust_type).split("::")[-1]
    if key.duration:
        return {"type": "string", "pattern": DURATION_PATTERN}
    if key.enum:
        return {"type": "string", "enum": key.enum}
    if t.startswith("NonZero"):
        return {"type": "integer", "minimum": 1}
    if t in ("u8", "u16", "u32", "u64", "u128", "usize"):
        return {"type": "integer", "minimum": 0}
    if t in ("i8", "i16", "i32", "i64", "isize"):
        return {"type": "integer"}
    if t in ("f32", "f64"):
        return {"type": "number"}
    if t == "bool":
        return {"type": "boolean"}
    if t.startswith("Vec<"):
        return {"type": "array"}
    if t.startswith(("BTreeMap<", "HashMap<")):
        return {"type": "object"}
    return {"type": "string"}


def settings_schema() -> dict[str, Any]:
    root: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "Configuration keys of the binary (generated from its sources by "
            "deploy/tools/configkeys.py); listen addresses, URLs, endpoints, the "
            "data directory and credentials are set by the chart"
        ),
        "properties": {},
    }
    for key in keys():
        if is_chart_managed(key.path) or key.path in SECRETS:
            continue
        node = root
        *parents, leaf = key.path.split(".")
        for p in parents:
            node = node["properties"].setdefault(p, {"type": "object", "additionalProperties": False, "properties": {}})
        schema = type_schema(key)
        if key.doc:
            schema["description"] = key.doc
        node["properties"][leaf] = schema
    return root


def schema_with_settings() -> str:
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["settings"] = settings_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


# --- The table of docs/operations.md ------------------------------------------


def table() -> str:
    rows = [
        "| Key | Environment variable | Type | Default | Set in the chart by | Description |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys():
        schema = type_schema(key)
        kind = "duration" if key.duration else ("one of " + ", ".join(key.enum) if key.enum else schema["type"])
        default = "" if key.default is None else f"`{key.default}`" if key.default else "(empty)"
        chart = ""
        if key.path.startswith("endpoints."):
            name = key.path.removeprefix("endpoints.")
            chart = f"`http://<release>-telenet-{name}:50051`, or `endpoints.{name}`"
        elif is_chart_managed(key.path):
            chart = CHART_MANAGED[key.path]
        elif key.path in SECRETS:
            chart = SECRETS[key.path]
        else:
            chart = f"`settings.{key.path}`"
        doc = key.doc.replace("|", "\\|")
        rows.append(f"| `{key.path}` | `{key.env}` | {kind} | {default} | {chart} | {doc} |")
    return "\n".join(rows)


def operations_with_table() -> str:
    text = OPERATIONS.read_text()
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{OPERATIONS}: markers {START} / {END} not found")
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if "--write" in argv:
        SCHEMA.write_text(schema_with_settings())
        OPERATIONS.write_text(operations_with_table())
        return 0
    if "--check" in argv:
        stale = [p for p, want in ((SCHEMA, schema_with_settings()), (OPERATIONS, operations_with_table())) if p.read_text() != want]
        for p in stale:
            print(f"{p.relative_to(REPO)} is stale: run python deploy/tools/configkeys.py --write", file=sys.stderr)
        return 1 if stale else 0
    for key in keys():
        print(f"{key.path}\t{key.env}\t{type_schema(key)}\t{key.default}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
