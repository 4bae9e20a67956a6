"""The values table of charts/telenet/README.md, generated from values.yaml.

A value is documented by a `# -- text` comment on the line(s) right above
its key; documenting a map documents everything in it. `--write` rewrites
the table between the README's markers; without it the table is printed.

    python deploy/tools/valuesdoc.py [--write]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "charts" / "telenet" / "values.yaml"
README = REPO / "charts" / "telenet" / "README.md"
START = "<!-- values:start -->"
END = "<!-- values:end -->"

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
DOC = re.compile(r"^\s*# -- (?P<text>.*)$")


def documented(text: str) -> dict[str, str]:
    """Key path (dotted) -> its `# --` description, in file order."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        m = DOC.match(line)
        if m:
            pending.append(m.group("text").strip())
            continue
        m = KEY.match(line)
        if not m:
            if not line.strip().startswith("#"):
                pending = []
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group("key")))
        if pending:
            docs[".".join(k for _, k in stack)] = " ".join(pending)
        pending = []
    return docs


def leaves(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def undocumented(text: str) -> list[str]:
    docs = documented(text)
    values = yaml.safe_load(text)

    def covered(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:i]) in docs for i in range(1, len(parts) + 1))

    return [leaf for leaf in leaves(values) if not covered(leaf)]


def lookup(values: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def type_of(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "bool", int: "int", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def table(text: str) -> str:
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, description in documented(text).items():
        value = lookup(values, path)
        default = json.dumps(value, separators=(",", ":"))
        if len(default) > 80:
            default = "see values.yaml"
        default = default.replace("|", "\\|")
        description = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {type_of(value)} | `{default}` | {description} |")
    return "\n".join(rows)


def with_table(readme: str, generated: str) -> str:
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{README}: markers {START} / {END} not found")
    return f"{head}{START}\n{generated}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = VALUES.read_text()
    missing = undocumented(text)
    if missing:
        print("undocumented values: " + ", ".join(missing), file=sys.stderr)
        return 1
    generated = table(text)
    if "--write" in argv:
        README.write_text(with_table(README.read_text(), generated))
    else:
        print(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
