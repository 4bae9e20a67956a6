"""Evaluates a Tiltfile without Tilt, with stub built-ins, and checks it.

Tilt is not installable from a package registry, and no cluster runs here,
but its Tiltfile language is Starlark: starlark-pyo3 parses and evaluates it
(with Tilt's dialect: top-level statements, no f-strings), and the
built-ins below record what the Tiltfile asks for instead of doing it.
`helm()` really renders the chart (helm-python-sdk) and `kustomize()` really
builds (kubectl kustomize), so the checks see the objects Tilt would apply:

- every `k8s_resource` names a rendered workload, and its port forwards
  reach a port the workload's containers expose;
- every `resource_deps` entry names a resource;
- every `docker_build` image is used by some container, and its live-update
  syncs stay inside its build context;
- every path (chart, values, Dockerfile, kustomization, deps) exists, unless a
  command of the Tiltfile creates it;
- a misspelt built-in or keyword, a syntax error or an f-string fails, as in
  Tilt (names are resolved before evaluation, so also in untaken branches).

Commands (`local`, `local_resource`) are recorded, never run.

    python deploy/tools/tiltcheck.py [Tiltfile] [-- --flag …]
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import starlark as sl
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chart as chartlib  # noqa: E402


class Blob:
    """Tilt's Blob: text from helm(), kustomize(), read_file(), local()."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class TiltfileError(Exception):
    """A call Tilt itself would reject at load time."""


@dataclass
class Report:
    docker_builds: list[dict[str, Any]] = field(default_factory=list)
    k8s_objects: list[dict[str, Any]] = field(default_factory=list)
    k8s_resources: list[dict[str, Any]] = field(default_factory=list)
    local_resources: list[dict[str, Any]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def workloads(self) -> dict[str, dict[str, Any]]:
        return {
            o["metadata"]["name"]: o for o in self.k8s_objects if o.get("kind") in chartlib.WORKLOAD_KINDS
        }

    def resource_names(self) -> set[str]:
        names = {r["name"] for r in self.local_resources}
        renamed = {r["workload"]: r["new_name"] for r in self.k8s_resources if r["new_name"]}
        for workload in self.workloads():
            names.add(renamed.get(workload, workload))
        return names


def _opaque(value: Any) -> Any:
    return sl.OpaquePythonObject(value)


# Names of `ext://` extensions the stubs know, and what each provides.
EXTENSIONS = {"restart_process": ("docker_build_with_restart", "custom_build_with_restart")}


class TiltStubs:
    """The built-ins a Tiltfile calls, recording into a Report."""

    def __init__(self, root: Path, args: list[str], report: Report) -> None:
        self.root = root
        self.args = args
        self.report = report

    # -- helpers -------------------------------------------------------------

    def path(self, p: str) -> Path:
        return (self.root / p).resolve()

    def rel(self, p: str | Path) -> str:
        try:
            return str(Path(self.path(str(p))).relative_to(self.root))
        except ValueError:
            return str(p)

    def need(self, p: str, what: str) -> None:
        """Report a missing path unless some command of the Tiltfile makes it."""
        if self.path(p).exists():
            return
        made = any(self.rel(p) in c for c in self.report.commands)
        if not made:
            self.report.problems.append(f"{what}: {p} does not exist")

    def yaml_docs(self, value: Any) -> list[dict[str, Any]]:
        if isinstance(value, list):
            return [d for v in value for d in self.yaml_docs(v)]
        if isinstance(value, Blob):
            text = value.text
        elif isinstance(value, str):
            p = self.path(value)
            if not p.exists():
                raise TiltfileError(f"k8s_yaml: {value} does not exist")
            text = p.read_text()
        else:
            raise TiltfileError(f"k8s_yaml: cannot read {type(value).__name__}")
        return [d for d in yaml.safe_load_all(text) if d]

    # -- config --------------------------------------------------------------

    def _define(self, kind: str) -> Callable[..., None]:
        def define(name: str, args: bool = False, usage: str = "") -> None:
            self.report.flags[name] = {"kind": kind, "args": args, "usage": usage}

        return define

    def config_parse(self) -> dict[str, Any]:
        """Parses `tilt up -- <args>` against the defined flags, like Tilt."""
        out: dict[str, Any] = {}
        positional = [f for f, d in self.report.flags.items() if d["args"]]
        i = 0
        while i < len(self.args):
            arg = self.args[i]
            if arg.startswith("--"):
                name, _, value = arg[2:].partition("=")
                flag = self.report.flags.get(name)
                if flag is None:
                    raise TiltfileError(f"config.parse: unknown flag --{name}")
                if flag["kind"] == "bool":
                    out[name] = value.lower() != "false" if value else True
                else:
                    if not value:
                        i += 1
                        value = self.args[i]
                    if flag["kind"] == "string_list":
                        out.setdefault(name, []).append(value)
                    else:
                        out[name] = value
            elif positional:
                out.setdefault(positional[0], []).append(arg)
            else:
                raise TiltfileError(f"config.parse: unexpected argument {arg}")
            i += 1
        return out

    # -- images --------------------------------------------------------------

    def docker_build(
        self,
        ref: str,
        context: str,
        build_args: dict | None = None,
        dockerfile: str = "Dockerfile",
        dockerfile_contents: str = "",
        live_update: list | None = None,
        match_in_env_vars: bool = False,
        ignore: list | str | None = None,
        only: list | str | None = None,
        entrypoint: list | str | None = None,
        target: str = "",
        ssh: Any = None,
        network: str = "",
        secret: Any = None,
        extra_tag: Any = None,
        container_args: list | None = None,
        cache_from: list | str | None = None,
        pull: bool = False,
        platform: str = "",
        extra_hosts: list | None = None,
        env_vars: dict | None = None,
    ) -> None:
        self.need(context, f"docker_build({ref!r}) context")
        if not dockerfile_contents:
            self.need(dockerfile, f"docker_build({ref!r}) dockerfile")
        steps = [s for s in (live_update or [])]
        context_path = self.path(context)
        for step in steps:
            if isinstance(step, tuple) and step[0] == "sync":
                local = self.path(step[1])
                if context_path != local and context_path not in local.parents:
                    self.report.problems.append(
                        f"docker_build({ref!r}): live_update sync {step[1]} is outside the context {context}"
                    )
        self.report.docker_builds.append(
            {
                "ref": ref,
                "context": context,
                "dockerfile": dockerfile,
                "only": only or [],
                "entrypoint": entrypoint or [],
                "live_update": steps,
                "target": target,
            }
        )

    def docker_build_with_restart(
        self,
        ref: str,
        context: str,
        entrypoint: list | str,
        live_update: list,
        base_suffix: str = "-tilt_docker_build_with_restart_base",
        restart_file: str = "/tmp/.restart-proc",
        trigger: Any = None,
        exit_policy: str = "restart",
        **kwargs: Any,
    ) -> None:
        if exit_policy not in ("restart", "continue"):
            raise TiltfileError(f"docker_build_with_restart: unknown exit_policy {exit_policy!r}")
        self.docker_build(ref, context, entrypoint=entrypoint, live_update=live_update, **kwargs)

    def custom_build(self, ref: str, command: str | list, deps: list, **kwargs: Any) -> None:
        self.report.commands.append(command if isinstance(command, str) else shlex.join(command))
        for d in deps:
            self.need(d, f"custom_build({ref!r}) dep")
        self.report.docker_builds.append({"ref": ref, "context": None, "live_update": kwargs.get("live_update", [])})

    # -- Kubernetes ----------------------------------------------------------

    def k8s_yaml(self, yaml: Any, allow_duplicates: bool = False) -> None:
        self.report.k8s_objects.extend(self.yaml_docs(yaml))

    def helm(
        self,
        pathToChartDir: str,
        name: str = "",
        namespace: str = "",
        values: list | str | None = None,
        set: list | str | None = None,
        kube_version: str = "",
        skip_crds: bool = False,
    ) -> Any:
        import helm_python

        chart_dir = self.path(pathToChartDir)
        if not (chart_dir / "Chart.yaml").exists():
            raise TiltfileError(f"helm: no chart at {pathToChartDir}")
        merged: dict[str, Any] = {}
        for f in [values] if isinstance(values, str) else (values or []):
            p = self.path(f)
            if not p.exists():
                raise TiltfileError(f"helm: values file {f} does not exist")
            merged = chartlib.deep_merge(merged, chartlib.load_values(p))
        for s in [set] if isinstance(set, str) else (set or []):
            merged = chartlib.deep_merge(merged, helm_python.parse_set_string(s))
        try:
            rendered = chartlib.render_files(
                merged, chart=chart_dir, name=name or chart_dir.name, namespace=namespace or "default"
            )
        except Exception as e:  # the SDK raises its own error types
            raise TiltfileError(f"helm: {pathToChartDir} does not render: {e}") from e
        text = "\n---\n".join(
            t for p, t in sorted(rendered.items()) if not p.endswith("NOTES.txt") and "/tests/" not in p
        )
        return _opaque(Blob(text))

    def kustomize(self, pathToDir: str, kustomize_bin: str | None = None, flags: list | None = None) -> Any:
        if not (self.path(pathToDir) / "kustomization.yaml").exists():
            raise TiltfileError(f"kustomize: no kustomization.yaml in {pathToDir}")
        return _opaque(Blob(kubectl_kustomize(self.path(pathToDir))))

    def k8s_resource(
        self,
        workload: str = "",
        new_name: str = "",
        port_forwards: Any = None,
        extra_pod_selectors: Any = None,
        trigger_mode: Any = None,
        resource_deps: list | None = None,
        objects: list | None = None,
        auto_init: bool = True,
        pod_readiness: str = "",
        links: list | None = None,
        labels: list | str | None = None,
        discovery_strategy: str = "",
    ) -> None:
        if isinstance(port_forwards, (str, int)):
            port_forwards = [port_forwards]
        self.report.k8s_resources.append(
            {
                "workload": workload,
                "new_name": new_name,
                "port_forwards": [str(p) for p in (port_forwards or [])],
                "resource_deps": list(resource_deps or []),
                "labels": labels,
            }
        )

    # -- local ---------------------------------------------------------------

    def local_resource(
        self,
        name: str,
        cmd: str | list = "",
        deps: list | str | None = None,
        trigger_mode: Any = None,
        resource_deps: list | None = None,
        ignore: list | None = None,
        auto_init: bool = True,
        serve_cmd: str | list = "",
        cmd_bat: str = "",
        serve_cmd_bat: str = "",
        allow_parallel: bool = False,
        links: list | None = None,
        tags: list | None = None,
        env: dict | None = None,
        serve_env: dict | None = None,
        readiness_probe: Any = None,
        dir: str = "",
        serve_dir: str = "",
        labels: list | str | None = None,
    ) -> None:
        for c in (cmd, serve_cmd):
            if c:
                self.report.commands.append(c if isinstance(c, str) else shlex.join(c))
        for d in [deps] if isinstance(deps, str) else (deps or []):
            self.need(d, f"local_resource({name!r}) dep")
        self.report.local_resources.append(
            {
                "name": name,
                "cmd": cmd,
                "serve_cmd": serve_cmd,
                "deps": deps,
                "resource_deps": list(resource_deps or []),
                "readiness_probe": readiness_probe,
            }
        )

    def local(
        self,
        command: str | list,
        quiet: bool = False,
        command_bat: str = "",
        echo_off: bool = False,
        env: dict | None = None,
        dir: str = "",
        stdin: Any = None,
    ) -> Any:
        self.report.commands.append(command if isinstance(command, str) else shlex.join(command))
        return _opaque(Blob(""))

    def read_file(self, file_path: str, default: Any = None) -> Any:
        p = self.path(file_path)
        if not p.exists():
            if default is None:
                raise TiltfileError(f"read_file: {file_path} does not exist")
            return _opaque(Blob(str(default)))
        return _opaque(Blob(p.read_text()))

    def read_yaml(self, file_path: str, default: Any = None) -> Any:
        p = self.path(file_path)
        if not p.exists():
            if default is None:
                raise TiltfileError(f"read_yaml: {file_path} does not exist")
            return default
        return yaml.safe_load(p.read_text())

    # -- small built-ins -----------------------------------------------------

    def builtins(self) -> dict[str, Callable[..., Any]]:
        def sync(local_path: str, remote_path: str) -> Any:
            return _opaque(("sync", local_path, remote_path))

        def run(cmd: str | list, trigger: list | str | None = None, echo_off: bool = False) -> Any:
            return _opaque(("run", cmd, trigger))

        def fall_back_on(files: list | str) -> Any:
            return _opaque(("fall_back_on", files))

        def restart_container() -> Any:
            return _opaque(("restart_container",))

        def link(url: str, name: str = "") -> Any:
            return _opaque(("link", url, name))

        def probe(
            initial_delay_secs: int = 0,
            timeout_secs: int = 1,
            period_secs: int = 10,
            success_threshold: int = 1,
            failure_threshold: int = 3,
            exec: Any = None,
            http_get: Any = None,
            tcp_socket: Any = None,
        ) -> Any:
            if sum(x is not None for x in (exec, http_get, tcp_socket)) != 1:
                raise TiltfileError("probe: exactly one of exec, http_get, tcp_socket")
            return _opaque(("probe", exec, http_get, tcp_socket))

        def http_get_action(port: int, host: str = "", scheme: str = "http", path: str = "") -> Any:
            return _opaque(("http_get", port, host, scheme, path))

        def tcp_socket_action(port: int, host: str = "") -> Any:
            return _opaque(("tcp_socket", port, host))

        def exec_action(command: list) -> Any:
            return _opaque(("exec", command))

        def noop(*args: Any, **kwargs: Any) -> None:
            return None

        def allow_k8s_contexts(contexts: list | str) -> None:
            return None

        def update_settings(
            max_parallel_updates: int = 3,
            k8s_upsert_timeout_secs: int = 30,
            suppress_unused_image_warnings: Any = None,
        ) -> None:
            return None

        def watch_settings(ignore: list | str) -> None:
            return None

        def watch_file(file_path: str) -> None:
            self.need(file_path, "watch_file")

        def listdir(directory: str, recursive: bool = False) -> list[str]:
            p = self.path(directory)
            if not p.is_dir():
                raise TiltfileError(f"listdir: {directory} is not a directory")
            it = p.rglob("*") if recursive else p.iterdir()
            return sorted(str(x) for x in it if x.is_file())

        def fail(msg: str) -> None:
            raise TiltfileError(f"fail(): {msg}")

        def warn(msg: str) -> None:
            return None

        def blob(contents: str) -> Any:
            return _opaque(Blob(contents))

        def k8s_context() -> str:
            return "kind-telenet"

        def k8s_namespace() -> str:
            return "default"

        def getcwd() -> str:
            return str(self.root)

        def path_exists(path: str) -> bool:
            return self.path(path).exists()

        def path_join(*parts: str) -> str:
            return os.path.join(*parts)

        def getenv(key: str, default: str = "") -> str:
            return default

        return {
            "sync": sync,
            "run": run,
            "fall_back_on": fall_back_on,
            "restart_container": restart_container,
            "link": link,
            "probe": probe,
            "http_get_action": http_get_action,
            "tcp_socket_action": tcp_socket_action,
            "exec_action": exec_action,
            "allow_k8s_contexts": allow_k8s_contexts,
            "update_settings": update_settings,
            "watch_settings": watch_settings,
            "watch_file": watch_file,
            "listdir": listdir,
            "fail": fail,
            "warn": warn,
            "blob": blob,
            "k8s_context": k8s_context,
            "k8s_namespace": k8s_namespace,
            "default_registry": noop,
            "docker_prune_settings": noop,
            "ci_settings": noop,
            "secret_settings": noop,
            "analytics_settings": noop,
            "version_settings": noop,
            "enable_feature": noop,
            "disable_snapshots": noop,
            "_getcwd": getcwd,
            "_path_exists": path_exists,
            "_path_join": path_join,
            "_getenv": getenv,
            "_define_bool": self._define("bool"),
            "_define_string": self._define("string"),
            "_define_string_list": self._define("string_list"),
            "_config_parse": self.config_parse,
            "_noop": noop,
            "docker_build": self.docker_build,
            "custom_build": self.custom_build,
            "k8s_yaml": self.k8s_yaml,
            "helm": self.helm,
            "kustomize": self.kustomize,
            "k8s_resource": self.k8s_resource,
            "local_resource": self.local_resource,
            "local": self.local,
            "read_file": self.read_file,
            "read_yaml": self.read_yaml,
        }


# The `config` and `os` namespaces, built from the stubs above.
PRELUDE = """
config = struct(
    define_bool = _define_bool,
    define_string = _define_string,
    define_string_list = _define_string_list,
    parse = _config_parse,
    set_enabled_resources = _noop,
    clear_enabled_resources = _noop,
)
os = struct(
    getcwd = _getcwd,
    getenv = _getenv,
    environ = {},
    path = struct(exists = _path_exists, join = _path_join),
)
TRIGGER_MODE_AUTO = "auto"
TRIGGER_MODE_MANUAL = "manual"
"""


def kubectl_kustomize(path: Path) -> str:
    try:
        out = subprocess.run(
            ["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=120
        )
    except FileNotFoundError as e:
        raise TiltfileError("kubectl is not installed: it is needed to build kustomizations") from e
    except subprocess.CalledProcessError as e:
        raise TiltfileError(f"kubectl kustomize {path} failed: {e.stderr.strip()}") from e
    return out.stdout


def _dialect() -> sl.Dialect:
    dialect = sl.Dialect.standard()
    dialect.enable_top_level_stmt = True
    dialect.enable_f_strings = False
    dialect.enable_load = True
    return dialect


def evaluate(tiltfile: Path, args: list[str] | None = None, root: Path | None = None) -> Report:
    """Evaluates `tiltfile` with `tilt up -- <args>` and checks the result.
    Paths are relative to `root` (default: the Tiltfile's directory)."""
    tiltfile = tiltfile.resolve()
    root = (root or tiltfile.parent).resolve()
    report = Report()
    stubs = TiltStubs(root, list(args or []), report)
    callables = stubs.builtins()
    globals_ = sl.Globals.extended_by(
        [sl.LibraryExtension.StructType, sl.LibraryExtension.Print, sl.LibraryExtension.Json]
    )

    def module() -> sl.Module:
        m = sl.Module()
        for name, fn in callables.items():
            m.add_callable(name, fn)
        sl.eval(m, sl.parse("<prelude>", PRELUDE, _dialect()), globals_)
        return m

    def load(path: str) -> sl.FrozenModule:
        if path.startswith("ext://"):
            ext = path[len("ext://") :]
            if ext not in EXTENSIONS:
                raise TiltfileError(f"load: no stub for extension {path}")
            m = sl.Module()
            for name in EXTENSIONS[ext]:
                fn = getattr(stubs, name, None)
                m.add_callable(name, fn if fn else callables["_noop"])
            return m.freeze()
        file = (root / path).resolve()
        if not file.exists():
            raise TiltfileError(f"load: {path} does not exist")
        m = module()
        sl.eval(m, sl.parse(str(file), file.read_text(), _dialect()), globals_, sl.FileLoader(load))
        return m.freeze()

    try:
        ast = sl.parse(str(tiltfile), tiltfile.read_text(), _dialect())
        sl.eval(module(), ast, globals_, sl.FileLoader(load))
    except sl.StarlarkError as e:
        report.problems.append(f"Tiltfile does not evaluate: {e}")
        return report
    check(report)
    return report


def _port_forward_remote(spec: str) -> int:
    parts = spec.split(":")
    return int(parts[-1] if len(parts) > 1 else parts[0])


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def check(report: Report) -> None:
    workloads = report.workloads()
    names = report.resource_names()
    for r in report.k8s_resources:
        workload = r["workload"].split(":", 1)[0]
        if workload not in workloads:
            report.problems.append(
                f"k8s_resource({r['workload']!r}) matches no workload (have: {', '.join(sorted(workloads))})"
            )
            continue
        pod = chartlib.pod_specs(workloads[workload])[0]
        ports = {p.get("containerPort") for c in pod.get("containers", []) for p in c.get("ports", [])}
        for spec in r["port_forwards"]:
            try:
                remote = _port_forward_remote(spec)
            except ValueError:
                report.problems.append(f"k8s_resource({r['workload']!r}): bad port forward {spec!r}")
                continue
            if remote not in ports:
                report.problems.append(
                    f"k8s_resource({r['workload']!r}): port forward {spec} reaches no container port "
                    f"(have: {sorted(p for p in ports if p)})"
                )
    for r in report.k8s_resources + report.local_resources:
        owner = r.get("name") or r.get("workload")
        for dep in r["resource_deps"]:
            if dep not in names:
                report.problems.append(f"{owner}: resource_deps names no resource: {dep!r}")
    images = {
        _image_name(c["image"])
        for o in report.k8s_objects
        for pod in chartlib.pod_specs(o)
        for c in pod.get("initContainers", []) + pod.get("containers", [])
    }
    for b in report.docker_builds:
        if _image_name(b["ref"]) not in images:
            report.problems.append(f"docker_build({b['ref']!r}): no container uses this image")


def main(argv: list[str]) -> int:
    tilt_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, tilt_args = argv[:i], argv[i + 1 :]
    tiltfile = Path(argv[0]) if argv else chartlib.REPO / "Tiltfile"
    report = evaluate(tiltfile, tilt_args)
    for p in report.problems:
        print(f"PROBLEM: {p}")
    if report.problems:
        return 1
    print(
        f"Tiltfile OK: {len(report.k8s_objects)} objects, {len(report.k8s_resources)} k8s resources, "
        f"{len(report.local_resources)} local resources, {len(report.docker_builds)} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
