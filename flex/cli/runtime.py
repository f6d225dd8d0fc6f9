"""`flex runtime ...`: run and manage containers on this machine (root or rootless).

`flex runtime run` is parsed by a small argparse parser (``fast_main``) that flex/cli/main.py calls
before typer is imported, and `flex runtime start ID` (what a runner's warm start runs) skips parsing
altogether: starting a container must not pay for typer, httpx or pyroute2. Every other
subcommand (and `--help`) goes through typer via ``register(app)``; both share the ``do_*`` functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from flex.errors import FlexError, InvalidArgument, UsageError

if TYPE_CHECKING:
    import typer

    from flex.runtime.containers.rootfs import ImageSource
    from flex.runtime.containers.store import Containers

__all__ = ["do_exec", "do_run", "do_start", "fast_main", "open_store", "register"]


def open_store() -> Containers:
    from flex.runtime.base.home import Home
    from flex.runtime.containers.store import Containers

    return Containers(Home.open())


def _images(ref: str, store: Containers) -> ImageSource:
    from flex.runtime.containers.rootfs import DirectoryImages

    if ref.startswith("/"):
        return DirectoryImages()
    from flex.runtime.containers.image_source import StoreImages

    return StoreImages(store.home, store.db, pull_missing=True)


def do_run(image: str, command: list[str], *, name: str | None = None, rm: bool = False, detach: bool = False,
           interactive: bool = False, tty: bool = False, env: Sequence[str] = (), workdir: str | None = None,
           user: str | None = None, volumes: Sequence[str] = (), net: str | None = None,
           publish: Sequence[str] = (), cpus: str | None = None, memory: str | None = None,
           pids: int | None = None, docker: bool = False, create_only: bool = False,
           allow_host_network: bool = False, security_opt: Sequence[str] = (), labels: Sequence[str] = (),
           userns: str | None = None) -> int:
    from flex.runtime.cgroups import cgroups
    from flex.runtime.containers.create import CreateOptions, create_container, parse_labels

    if tty and not sys.stdin.isatty() and not detach and not create_only:
        raise UsageError("-t needs a terminal on stdin", hint="drop -t, or run from a terminal")
    if pids is not None and pids < 1:
        raise InvalidArgument(f"--pids {pids}: must be at least 1")
    opts = CreateOptions(
        image=image, command=list(command), name=name, env=list(env), workdir=workdir, user=user,
        volumes=list(volumes), net=net or "private", publish=list(publish),
        allow_host_network=allow_host_network,
        cpus=cgroups.parse_cpus(cpus) if cpus is not None else None,
        memory=cgroups.parse_memory(memory) if memory is not None else None, pids=pids, docker=docker,
        no_new_privileges=_no_new_privileges(security_opt), tty=tty, interactive=interactive, auto_remove=rm,
        labels=parse_labels(list(labels)), userns=userns)
    store = open_store()
    c = create_container(store, _images(image, store), opts)
    if create_only:
        print(c.id)
        return 0
    from flex.runtime.tasks import tasks

    if detach:
        tasks.start_detached(store, c)
        print(c.id)
        return 0
    try:
        code = tasks.start_attached(store, c, interactive=interactive, tty=tty)
    finally:
        if rm:
            store.remove(c.id, force=True)
    return code


def _no_new_privileges(security_opt: Sequence[str]) -> bool:
    """``--security-opt no-new-privileges[:true|false]`` (Docker's and podman's spelling; last one wins)."""
    on = False
    for opt in security_opt:
        key, sep, value = opt.replace("=", ":", 1).partition(":")
        if key != "no-new-privileges" or value not in (("true", "false") if sep else ("",)):
            raise InvalidArgument(f"--security-opt {opt!r}: not an option flex knows",
                                  hint="flex knows --security-opt no-new-privileges[:true|false]")
        on = value != "false"
    return on


# One text per flag of run and create, for both parsers (fast_main's argparse and typer's --help).
_HELP = {
    "name": "name the container",
    "rm": "remove the container when it exits",
    "detach": "run in the background; print the id",
    "interactive": "keep stdin open",
    "tty": "allocate a pseudo-terminal (TERM: yours, else xterm)",
    "env": "set an environment variable (K alone: take it from here)",
    "workdir": "working directory inside the container",
    "user": "user name or uid[:gid] inside the container",
    "volume": "bind-mount a host path (SRC:DST[:ro])",
    "publish": "publish a port: [HOSTIP:]HOSTPORT:PORT[/udp] (HOSTIP defaults to 127.0.0.1, HOSTPORT 0 picks one)",
    "net": "network: none | private | host (default private)",
    "allow_host_network": "permit --net host on a root runner",
    "cpus": "CPU limit, e.g. 1.5",
    "memory": "memory limit, e.g. 512m, 2g",
    "pids": "maximum number of processes",
    "docker": "let dockerd run inside",
    "security_opt": "no-new-privileges: setuid binaries (sudo) stop working",
    "label": "K=V, a label on the container (ps --filter label=K=V finds it)",
    "userns": "keep-id[:uid=U,gid=G]: your own uid/gid is U/G inside (rootless; default: the same ids)",
}


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flex runtime run", add_help=True,
                                description="Run a command in a new container.")
    h = _HELP
    p.add_argument("--name", help=h["name"])
    p.add_argument("--rm", action="store_true", help=h["rm"])
    p.add_argument("-d", "--detach", action="store_true", help=h["detach"])
    p.add_argument("-i", "--interactive", action="store_true", help=h["interactive"])
    p.add_argument("-t", "--tty", action="store_true", help=h["tty"])
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help=h["env"])
    p.add_argument("-w", "--workdir", metavar="DIR", help=h["workdir"])
    p.add_argument("-u", "--user", help=h["user"])
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help=h["volume"])
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[HOSTIP:]HOSTPORT:PORT[/udp]",
                   help=h["publish"])
    p.add_argument("--net", "--network", dest="net", metavar="none|private|host", help=h["net"])
    p.add_argument("--allow-host-network", action="store_true", help=h["allow_host_network"])
    p.add_argument("--cpus", help=h["cpus"])
    p.add_argument("--memory", "-m", help=h["memory"])
    p.add_argument("--pids", type=int, help=h["pids"])
    p.add_argument("--docker", action="store_true", help=h["docker"])
    p.add_argument("--security-opt", action="append", default=[], metavar="no-new-privileges",
                   help=h["security_opt"])
    p.add_argument("-l", "--label", action="append", default=[], metavar="K=V", help=h["label"])
    p.add_argument("--userns", metavar="keep-id[:uid=U,gid=G]", help=h["userns"])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)
    return p


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _ArgError(message)


def fast_main(argv: Sequence[str]) -> int | None:
    """``flex [--debug] runtime run|create|start|exec ...`` without typer; None when argv is not such a command."""
    args = list(argv)
    debug = False
    while args and args[0] == "--debug":
        debug, args = True, args[1:]
    if len(args) == 3 and args[:2] == ["runtime", "start"] and not args[2].startswith("-"):
        return _fast(lambda: do_start(args[2]), debug)  # the runner's warm start (issue 14)
    if args[:2] == ["runtime", "exec"] and (parsed := _exec_args(args[2:])) is not None:
        return _fast(lambda: do_exec(*parsed), debug)  # the runner's hooks and userEnvProbe (issue 16)
    if len(args) < 2 or args[0] != "runtime" or args[1] not in ("run", "create"):
        return None
    if any(a in ("-h", "--help") for a in args[2:3]):
        return None
    parser = _run_parser()
    parser.__class__ = _Parser
    try:
        ns = parser.parse_args(args[2:])
    except _ArgError as err:
        print(f"error: flex runtime {args[1]}: {err}", file=sys.stderr)
        print(f"hint: see flex runtime {args[1]} --help", file=sys.stderr)
        return 2
    return _fast(lambda: do_run(ns.image, ns.command, name=ns.name, rm=ns.rm, detach=ns.detach,
                                interactive=ns.interactive, tty=ns.tty, env=ns.env, workdir=ns.workdir, user=ns.user,
                                volumes=ns.volume, net=ns.net, publish=ns.publish, cpus=ns.cpus, memory=ns.memory,
                                pids=ns.pids, docker=ns.docker, create_only=args[1] == "create",
                                allow_host_network=ns.allow_host_network, security_opt=ns.security_opt,
                                labels=ns.label, userns=ns.userns), debug or ns.debug)


_EXEC_VALUES = {"-w": "workdir", "--workdir": "workdir", "-u": "user", "--user": "user", "-e": "env", "--env": "env"}


def _exec_args(args: list[str]) -> tuple[str, list[str], bool, bool, list[str], str | None, str | None] | None:
    """``[-i] [-t] [-w DIR] [-u USER] [-e K[=V]]... CONTAINER COMMAND...`` (the form the runner calls) as
    do_exec's arguments; None for any other form (typer then parses it, and says what is wrong)."""
    flags = {"interactive": False, "tty": False}
    values: dict[str, Any] = {"workdir": None, "user": None, "env": []}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        if a in ("-i", "--interactive", "-t", "--tty"):
            flags["interactive" if a in ("-i", "--interactive") else "tty"] = True
        elif a in _EXEC_VALUES and i + 1 < len(args):
            i += 1
            if _EXEC_VALUES[a] == "env":
                values["env"].append(args[i])
            else:
                values[_EXEC_VALUES[a]] = args[i]
        else:
            return None
        i += 1
    if len(args) - i < 2:
        return None
    return (args[i], args[i + 1:], flags["interactive"], flags["tty"], values["env"], values["workdir"],
            values["user"])


def do_exec(container: str, command: list[str], interactive: bool, tty: bool, env: list[str],
            workdir: str | None, user: str | None) -> int:
    """Run a command in a running container; its exit code."""
    from flex.runtime.tasks import tasks

    store = open_store()
    c = store.get(container)
    if workdir is not None and not workdir.startswith("/"):
        raise InvalidArgument(f"-w {workdir!r}: must be an absolute path inside the container")
    if tty and not sys.stdin.isatty():
        raise UsageError("-t needs a terminal on stdin", hint="drop -t, or run from a terminal")
    ids = tasks.exec_user(store, c, user) if user else None
    return tasks.exec_process(store, c, command, tty=tty, interactive=interactive, env=env, workdir=workdir,
                              user=ids)


def _fast(command: Callable[[], int], debug: bool) -> int:
    """A fast path's errors as main() reports them: one line, a hint, the kind's exit code."""
    try:
        return command()
    except FlexError as err:
        if debug or os.environ.get("FLEX_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


def do_start(container: str) -> int:
    """Start a created (or stopped) container in the background."""
    from flex.errors import Conflict
    from flex.runtime.tasks import tasks

    store = open_store()
    c = store.get(container)
    if c.state == "running":
        raise Conflict(f"container {c.name} is already running")
    store.runtime.delete(c.id, force=True)
    tasks.start_detached(store, c)
    return 0


# --- typer: every subcommand, and help -------------------------------------------------------------------

def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    s = int(time.time() - ts)
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def _ports(ports: list[dict[str, Any]]) -> str:
    """Published ports the way `docker ps` shows them: 127.0.0.1:8080->80/tcp, ..."""
    return ", ".join(f"{p['host_ip']}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
                     for p in ports) or "-"


def register(app: typer.Typer) -> None:
    import typer

    rt = typer.Typer(help="Run containers on this machine: rootless, user-namespaced, Docker inside.",
                     no_args_is_help=True)
    app.add_typer(rt, name="runtime")
    ctx_settings = {"allow_interspersed_args": False}

    h = _HELP

    @rt.command(context_settings=ctx_settings)
    def run(image: str = typer.Argument(..., help="image name, or a root filesystem directory"),
            command: list[str] = typer.Argument(None, help="command and arguments (default: the image's)"),
            name: str = typer.Option(None, "--name", help=h["name"]),
            rm: bool = typer.Option(False, "--rm", help=h["rm"]),
            detach: bool = typer.Option(False, "-d", "--detach", help=h["detach"]),
            interactive: bool = typer.Option(False, "-i", "--interactive", help=h["interactive"]),
            tty: bool = typer.Option(False, "-t", "--tty", help=h["tty"]),
            env: list[str] = typer.Option([], "-e", "--env", help=h["env"]),
            workdir: str = typer.Option(None, "-w", "--workdir", help=h["workdir"]),
            user: str = typer.Option(None, "-u", "--user", help=h["user"]),
            volume: list[str] = typer.Option([], "-v", "--volume", help=h["volume"]),
            publish: list[str] = typer.Option([], "-p", "--publish", help=h["publish"]),
            net: str = typer.Option(None, "--net", "--network", help=h["net"]),
            allow_host_network: bool = typer.Option(False, "--allow-host-network", help=h["allow_host_network"]),
            cpus: str = typer.Option(None, "--cpus", help=h["cpus"]),
            memory: str = typer.Option(None, "-m", "--memory", help=h["memory"]),
            pids: int = typer.Option(None, "--pids", help=h["pids"]),
            docker: bool = typer.Option(False, "--docker", help=h["docker"]),
            security_opt: list[str] = typer.Option([], "--security-opt", help=h["security_opt"]),
            label: list[str] = typer.Option([], "-l", "--label", help=h["label"]),
            userns: str = typer.Option(None, "--userns", help=h["userns"])) -> None:
        """Run a command in a new container (exit code passed through)."""
        raise typer.Exit(do_run(image, command or [], name=name, rm=rm, detach=detach, interactive=interactive,
                                tty=tty, env=env, workdir=workdir, user=user, volumes=volume, net=net,
                                publish=publish, cpus=cpus, memory=memory, pids=pids, docker=docker,
                                allow_host_network=allow_host_network, security_opt=security_opt, labels=label,
                                userns=userns))

    @rt.command(context_settings=ctx_settings)
    def create(image: str = typer.Argument(..., help="image name, or a root filesystem directory"),
               command: list[str] = typer.Argument(None, help="command and arguments (default: the image's)"),
               name: str = typer.Option(None, "--name", help=h["name"]),
               tty: bool = typer.Option(False, "-t", "--tty", help=h["tty"]),
               env: list[str] = typer.Option([], "-e", "--env", help=h["env"]),
               workdir: str = typer.Option(None, "-w", "--workdir", help=h["workdir"]),
               user: str = typer.Option(None, "-u", "--user", help=h["user"]),
               volume: list[str] = typer.Option([], "-v", "--volume", help=h["volume"]),
               net: str = typer.Option(None, "--net", "--network", help=h["net"]),
               publish: list[str] = typer.Option([], "-p", "--publish", help=h["publish"]),
               allow_host_network: bool = typer.Option(False, "--allow-host-network", help=h["allow_host_network"]),
               cpus: str = typer.Option(None, "--cpus", help=h["cpus"]),
               memory: str = typer.Option(None, "-m", "--memory", help=h["memory"]),
               pids: int = typer.Option(None, "--pids", help=h["pids"]),
               docker: bool = typer.Option(False, "--docker", help=h["docker"]),
               security_opt: list[str] = typer.Option([], "--security-opt", help=h["security_opt"]),
               label: list[str] = typer.Option([], "-l", "--label", help=h["label"]),
               userns: str = typer.Option(None, "--userns", help=h["userns"])) -> None:
        """Create a container without starting it; prints its id."""
        do_run(image, command or [], name=name, tty=tty, env=env, workdir=workdir, user=user, volumes=volume,
               net=net, publish=publish, cpus=cpus, memory=memory, pids=pids, docker=docker, create_only=True,
               detach=True, allow_host_network=allow_host_network, security_opt=security_opt, labels=label,
               userns=userns)

    @rt.command()
    def start(container: str) -> None:
        """Start a created (or stopped) container in the background."""
        do_start(container)

    @rt.command(name="exec", context_settings=ctx_settings)
    def exec_(container: str, command: list[str], interactive: bool = typer.Option(False, "-i", "--interactive"),
              tty: bool = typer.Option(False, "-t", "--tty"), env: list[str] = typer.Option([], "-e", "--env"),
              workdir: str = typer.Option(None, "-w", "--workdir"),
              user: str = typer.Option(None, "-u", "--user")) -> None:
        """Run a command in a running container."""
        raise typer.Exit(do_exec(container, command, interactive, tty, env, workdir, user))

    @rt.command()
    def ps(all_: bool = typer.Option(False, "-a", "--all"), quiet: bool = typer.Option(False, "-q", "--quiet"),
           json_: bool = typer.Option(False, "--json"),
           filter_: list[str] = typer.Option([], "-f", "--filter", help="label=K=V (repeat: all must match)")
           ) -> None:
        """List containers (running ones; -a for all)."""
        wanted = _label_filters(filter_)
        cs = [c for c in open_store().all() if (all_ or c.state == "running") and c.matches(wanted)]
        if json_:
            print(json.dumps([c.to_dict() for c in cs], indent=2))
            return
        if quiet:
            for c in cs:
                print(c.id[:12])
            return
        rows = [["ID", "NAME", "IMAGE", "STATE", "CREATED", "PORTS", "COMMAND"]]
        for c in cs:
            state = c.state if c.state != "stopped" else f"exited ({c.exit_code})"
            rows.append([c.id[:12], c.name, c.image[-40:], state, _age(c.created_at), _ports(c.ports),
                         " ".join(c.options.get("command") or [])[:30]])
        _table(rows)

    @rt.command()
    def stop(containers: list[str], timeout: float = typer.Option(10.0, "-t", "--time")) -> None:
        """Stop containers: SIGTERM, then SIGKILL after --time seconds."""
        store = open_store()
        for ref in containers:
            store.stop(ref, timeout)
            print(ref)

    @rt.command()
    def kill(containers: list[str], signal: str = typer.Option("KILL", "-s", "--signal")) -> None:
        """Send a signal to containers' PID 1."""
        store = open_store()
        for ref in containers:
            store.kill(ref, signal)
            print(ref)

    @rt.command()
    def rm(containers: list[str], force: bool = typer.Option(False, "-f", "--force")) -> None:
        """Remove containers with everything they hold (mounts, cgroups, id ranges, network)."""
        store = open_store()
        for ref in containers:
            store.remove(ref, force=force)
            print(ref)

    @rt.command()
    def wait(container: str) -> None:
        """Wait for a container to stop; prints its exit code."""
        c = open_store().wait(container)
        print(c.exit_code)

    @rt.command()
    def logs(container: str, follow: bool = typer.Option(False, "-f", "--follow")) -> None:
        """Print a container's output (-f: keep following until it stops)."""
        store = open_store()
        c = store.get(container)
        path = store.bundle(c.id) / "log"
        out = sys.stdout.buffer
        with open(path, "rb") as f:
            while True:
                data = f.read(65536)
                if data:
                    out.write(data)
                    out.flush()
                    continue
                if not follow or store.get(c.id).state != "running":
                    rest = f.read()
                    out.write(rest)
                    out.flush()
                    return
                time.sleep(0.1)

    @rt.command()
    def update(container: str, cpus: str = typer.Option(None, "--cpus"),
               memory: str = typer.Option(None, "-m", "--memory"), pids: int = typer.Option(None, "--pids")) -> None:
        """Change a running container's cpu, memory or pids limit."""
        from flex.runtime.cgroups import cgroups

        store = open_store()
        c = store.get(container)
        limits = cgroups.Limits(cpus=cgroups.parse_cpus(cpus) if cpus else None,
                                memory=cgroups.parse_memory(memory) if memory else None, pids=pids)
        if limits.empty():
            raise UsageError("nothing to update", hint="give --cpus, --memory or --pids")
        if c.state != "running":
            raise UsageError(f"container {c.name} is not running")
        if not c.cgroup:
            raise FlexError(f"container {c.name} has no cgroup of its own (rootless without delegation)")
        res = store.bundle(c.id) / "resources.json"
        res.write_text(json.dumps(limits.to_oci()))
        store.runtime.update(c.id, res)
        opts = dict(c.options)
        opts.update({k: v for k, v in vars(limits).items() if v is not None})
        store.set_state(c.id, options=json.dumps(opts))

    @rt.command()
    def inspect(container: str) -> None:
        """Print a container's record and runtime state as JSON."""
        store = open_store()
        c = store.get(container)
        out = c.to_dict()
        out["oci_state"] = store.runtime.state(c.id)
        out["bundle"] = str(store.bundle(c.id))
        print(json.dumps(out, indent=2))

    @rt.command()
    def port(container: str) -> None:
        """List a container's published ports."""
        c = open_store().get(container)
        for p in c.ports:
            print(f"{p['container_port']}/{p['protocol']} -> {p['host_ip']}:{p['host_port']}")

    @rt.command(name="delegate-cgroups")
    def delegate_cgroups(user: str) -> None:
        """(root, cgroup v1) Let USER's rootless containers have cgroups: limits and nested Docker."""
        import pwd

        from flex.runtime.cgroups import cgroups

        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise InvalidArgument(f"no such user: {user}") from None
        for d in cgroups.delegate_to_user(pw.pw_uid, pw.pw_gid):
            print(d)

    @rt.command()
    def gc() -> None:
        """Remove whatever no container owns any more (after crashes, kill -9, reboots)."""
        for item in open_store().gc():
            print(item)


def _label_filters(filters: list[str]) -> dict[str, str | None]:
    """``ps --filter label=K=V`` (or ``label=K``: any value), as docker and podman spell it."""
    out: dict[str, str | None] = {}
    for f in filters:
        kind, sep, rest = f.partition("=")
        if kind != "label" or not sep or not rest:
            raise UsageError(f"--filter {f!r}: only label=KEY=VALUE filters are supported",
                             hint="e.g. --filter label=flex.dev/environment=env_123")
        key, has_value, value = rest.partition("=")
        out[key] = value if has_value else None
    return out
