"""One handler per instruction: each computes its step key, reuses the cache or does the work."""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import Any

from flex.errors import InvalidArgument
from flex.runtime.build.builder import DEFAULT_SHELL, Builder
from flex.runtime.build.layer import TarWriter
from flex.runtime.build.merged import MergedView
from flex.runtime.build.parser.instruction import Instruction
from flex.runtime.build.state import State, step_key

__all__ = ["PROXY_ARGS", "abs_path", "lookup_path", "lowers_of", "missing_dirs", "predefined_args", "run_instruction"]

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")


def abs_path(path: str, workdir: str) -> str:
    return posixpath.normpath(posixpath.join(workdir or "/", path))


def _pairs(words: list[str], ins: Instruction) -> list[tuple[str, str]]:
    """``K=V K2=V2`` or the legacy ``K V`` form of ENV and LABEL."""
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise InvalidArgument(f"{ins.where}: {ins.cmd} {words[0]} needs a value",
                                  hint=f"{ins.cmd} {words[0]}=value")
        rest = ins.args[0].split(None, 1)[1] if len(ins.args[0].split(None, 1)) > 1 else ""
        return [(words[0], rest)] if ins.cmd == "MAINTAINER" else [(words[0], " ".join(words[1:]))]
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise InvalidArgument(f"{ins.where}: {ins.cmd} expects KEY=VALUE, got {w!r}")
        out.append((k, v))
    return out


def run_instruction(b: Builder, ins: Instruction, st: State) -> State:
    handler = _HANDLERS.get(ins.cmd)
    if handler is None:
        raise InvalidArgument(f"{ins.where}: {ins.cmd} is not supported here")
    new: State = handler(b, ins, st)
    return new


def _config_step(b: Builder, ins: Instruction, st: State, what: Any, apply: Any) -> State:
    key = step_key(st.key, ins.cmd, what)
    hit = b.lookup(key, st)
    if hit is not None:
        return hit
    new = st.restore(key, st.saved())
    apply(new)
    b.history(new, f"{ins.cmd} {json.dumps(what) if not isinstance(what, str) else what}", empty=True)
    b.record(new)
    return new


def _arg(b: Builder, ins: Instruction, st: State) -> State:
    words = b.words(ins, st)
    for w in words:
        name, eq, default = w.partition("=")
        if not name:
            raise InvalidArgument(f"{ins.where}: ARG needs a name")
        if name in b.ctx.build_args:
            st.args[name] = b.ctx.build_args[name]
        elif eq:
            st.args[name] = default
        elif name in st.meta_args:
            st.args[name] = st.meta_args[name]
        elif name in predefined_args():
            st.args[name] = predefined_args()[name]
    # an ARG changes no image, but what later steps see: it is in their keys through the args they see
    return st


def predefined_args() -> dict[str, str]:
    from flex.runtime.images.store import host_platform

    p = host_platform()
    variant = p.get("variant", "") if p["architecture"] != "arm64" else ""  # linux/arm64, as BuildKit says
    plat = f"{p['os']}/{p['architecture']}" + (f"/{variant}" if variant else "")
    return {"TARGETOS": p["os"], "TARGETARCH": p["architecture"], "TARGETVARIANT": variant, "TARGETPLATFORM": plat,
            "BUILDPLATFORM": plat, "BUILDOS": p["os"], "BUILDARCH": p["architecture"], "BUILDVARIANT": variant}


def _env(b: Builder, ins: Instruction, st: State) -> State:
    pairs = _pairs(b.words(ins, st), ins)

    def apply(new: State) -> None:
        for k, v in pairs:
            new.set_env(k, v)
    return _config_step(b, ins, st, [list(p) for p in pairs], apply)


def _label(b: Builder, ins: Instruction, st: State) -> State:
    pairs = _pairs(b.words(ins, st), ins)

    def apply(new: State) -> None:
        labels = dict(new.config.get("Labels") or {})
        labels.update(pairs)
        new.config["Labels"] = labels
    return _config_step(b, ins, st, [list(p) for p in pairs], apply)


def _maintainer(b: Builder, ins: Instruction, st: State) -> State:
    who = ins.args[0]
    return _config_step(b, ins, st, who, lambda new: new.config.__setitem__("Author", who))


def _user(b: Builder, ins: Instruction, st: State) -> State:
    user = b.word(ins.args[0], ins, st)
    return _config_step(b, ins, st, user, lambda new: new.config.__setitem__("User", user))


def _stopsignal(b: Builder, ins: Instruction, st: State) -> State:
    sig = b.word(ins.args[0], ins, st)
    return _config_step(b, ins, st, sig, lambda new: new.config.__setitem__("StopSignal", sig))


def _expose(b: Builder, ins: Instruction, st: State) -> State:
    ports = []
    for p in b.words(ins, st):
        port, _, proto = p.partition("/")
        if not port.replace("-", "").isdigit() or proto not in ("", "tcp", "udp", "sctp"):
            raise InvalidArgument(f"{ins.where}: EXPOSE {p!r}: expected PORT[/tcp|udp|sctp]")
        ports.append(f"{port}/{proto or 'tcp'}")

    def apply(new: State) -> None:
        exposed = dict(new.config.get("ExposedPorts") or {})
        for p in ports:
            exposed[p] = {}
        new.config["ExposedPorts"] = exposed
    return _config_step(b, ins, st, ports, apply)


def _volume(b: Builder, ins: Instruction, st: State) -> State:
    vols = [b.word(v, ins, st) for v in ins.args] if ins.json_form else b.words(ins, st)
    vols = [abs_path(v, "/") for v in vols]
    key = step_key(st.key, "VOLUME", vols)
    hit = b.lookup(key, st)
    if hit is not None:
        return hit
    new = st.restore(key, st.saved())
    v = dict(new.config.get("Volumes") or {})
    for item in vols:
        v[item] = {}
    new.config["Volumes"] = v
    made = _make_dirs(b, new, vols)  # the mount points exist in the image, as Docker and buildah make them
    b.history(new, f"VOLUME {json.dumps(vols)}", empty=not made)
    b.record(new)
    return new


def _make_dirs(b: Builder, st: State, paths: list[str]) -> bool:
    """A layer with the directories of ``paths`` the image lacks (root, 0755); False if none."""
    lowers = lowers_of(b, st)
    missing: list[str] = []
    for path in paths:
        missing += [d for d in missing_dirs(lowers, path) if d not in missing]
    if not missing:
        return False

    def make(tar: Path) -> int:
        with open(tar, "wb") as f:
            w = TarWriter(f, b.epoch)
            for d in sorted(missing):
                w.add_dir(d.lstrip("/") + "/", 0o755, 0, 0, _now(b))
            w.close()
        return len(missing)
    return b.with_tar(st, make)


def _exec_or_shell(ins: Instruction, st: State) -> list[str]:
    if ins.json_form:
        return list(ins.args)
    return [*(st.config.get("Shell") or DEFAULT_SHELL), ins.args[0]]


def _cmd(b: Builder, ins: Instruction, st: State) -> State:
    value = _exec_or_shell(ins, st)
    return _config_step(b, ins, st, value, lambda new: new.config.__setitem__("Cmd", value))


def _entrypoint(b: Builder, ins: Instruction, st: State) -> State:
    value = _exec_or_shell(ins, st)

    def apply(new: State) -> None:
        new.config["Entrypoint"] = value
        new.config.pop("Cmd", None)  # ENTRYPOINT resets a CMD inherited from the base, as Docker does
    return _config_step(b, ins, st, value, apply)


def _shell(b: Builder, ins: Instruction, st: State) -> State:
    if not ins.json_form:
        raise InvalidArgument(f"{ins.where}: SHELL needs the JSON form", hint='SHELL ["/bin/bash", "-c"]')
    value = list(ins.args)
    return _config_step(b, ins, st, value, lambda new: new.config.__setitem__("Shell", value))


def _onbuild(b: Builder, ins: Instruction, st: State) -> State:
    trigger = ins.original.split(None, 1)[1] if len(ins.original.split(None, 1)) > 1 else ""
    if trigger.split(None, 1)[0].upper() in ("ONBUILD", "FROM", "MAINTAINER"):
        raise InvalidArgument(f"{ins.where}: ONBUILD {trigger.split()[0]} is not allowed")

    def apply(new: State) -> None:
        new.config["OnBuild"] = [*(new.config.get("OnBuild") or []), trigger]
    return _config_step(b, ins, st, trigger, apply)


def _healthcheck(b: Builder, ins: Instruction, st: State) -> State:
    rest = ins.args[0]
    if rest.strip().upper() == "NONE":
        hc: dict[str, Any] = {"Test": ["NONE"]}
    else:
        word, _, cmd = rest.partition(" ")
        if word.upper() != "CMD":
            raise InvalidArgument(f"{ins.where}: HEALTHCHECK expects CMD or NONE")
        from flex.runtime.build.parser.dockerfile import _json_args  # same JSON rule as CMD

        cmd = cmd.strip()
        args = _json_args(cmd)
        hc = {"Test": ["CMD", *args] if args is not None else ["CMD-SHELL", cmd]}
        for flag, field in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                            ("start-interval", "StartInterval")):
            if ins.flag(flag):
                hc[field] = _duration(ins.flag(flag) or "", ins)
        if ins.flag("retries"):
            hc["Retries"] = int(ins.flag("retries") or 0)
    return _config_step(b, ins, st, hc, lambda new: new.config.__setitem__("Healthcheck", hc))


def _duration(text: str, ins: Instruction) -> int:
    import re

    total = 0.0
    units = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(a + u for a, u in parts) != text:
        raise InvalidArgument(f"{ins.where}: {text!r} is not a duration", hint="e.g. 30s, 1m30s")
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return int(total)


def _workdir(b: Builder, ins: Instruction, st: State) -> State:
    path = abs_path(b.word(ins.args[0], ins, st), st.config.get("WorkingDir") or "/")
    key = step_key(st.key, "WORKDIR", path)
    hit = b.lookup(key, st)
    if hit is not None:
        return hit
    new = st.restore(key, st.saved())
    new.config["WorkingDir"] = path
    made = _make_dirs(b, new, [path])
    b.history(new, f"WORKDIR {path}", empty=not made)
    b.record(new)
    return new


def _now(b: Builder) -> int:
    import time

    return b.epoch if b.epoch is not None else int(time.time())


def lowers_of(b: Builder, st: State) -> list[Path]:
    return b.ctx.images.snapshots.lowers(st.top) if st.top else []


def lookup_path(lowers: list[Path], rel: str) -> os.stat_result | None:
    """lstat of ``rel`` in the merged layers, or None."""
    return MergedView(lowers).lstat(rel) if lowers else None


def missing_dirs(lowers: list[Path], path: str) -> list[str]:
    """The directories of ``path`` (itself included) the layers do not have, outermost first."""
    view = MergedView(lowers)
    out: list[str] = []
    cur = ""
    for part in [p for p in path.split("/") if p]:
        cur = f"{cur}/{part}"
        if out or not lowers or view.lstat(cur) is None:
            out.append(cur)
    return out


def _run(b: Builder, ins: Instruction, st: State) -> State:
    from flex.runtime.build.mounts import parse_run_mounts
    from flex.runtime.build.run import RunRequest, run_step
    from flex.runtime.build.upper import take_upper

    if ins.heredocs:
        script = ins.heredocs[0].content
        first = ins.args[0].strip()
        if first.startswith("<<"):
            args = [*(st.config.get("Shell") or DEFAULT_SHELL), script]
        else:
            args = [*(st.config.get("Shell") or DEFAULT_SHELL),
                    first + "\n" + "".join(h.content + h.name + "\n" for h in ins.heredocs)]
    else:
        args = _exec_or_shell(ins, st)
    network = ins.flag("network") or "default"
    if network not in ("default", "none", "host"):
        raise InvalidArgument(f"{ins.where}: --network={network}: expected default or none")
    if network == "host":
        raise InvalidArgument(f"{ins.where}: --network=host is not allowed in a flex build",
                              hint="RUN steps use the runtime's network (default) or none")
    env_map = {**st.args, **st.env()}
    mounts = parse_run_mounts(b, ins, st, env_map)
    visible = {k: v for k, v in sorted(st.args.items()) if k not in PROXY_ARGS}
    key = step_key(st.key, "RUN", args, visible, network, [m.key for m in mounts])
    hit = b.lookup(key, st)
    if hit is not None:
        b.say(f"{ins.where}: RUN (cached)")
        return hit
    new = st.restore(key, st.saved())
    b.say(f"{ins.where}: RUN {ins.args[0] if not ins.json_form else json.dumps(ins.args)}")
    env = dict(b.ctx.settings.env)
    env.update(st.args)  # build args are environment for RUN, below ENV
    env.update(st.env())
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    binds = [(src, dst, True) for src, dst in b.ctx.settings.mounts]
    binds += [(m.source, m.target, m.readonly) for m in mounts if m.source is not None]
    lowers = lowers_of(b, new)
    if not lowers:
        raise InvalidArgument(f"{ins.where}: RUN needs a base image with a shell (this stage is FROM scratch)")
    req = RunRequest(args=args, lowers=lowers, snapshot=new.top, env=[f"{k}={v}" for k, v in env.items()],
                     workdir=new.config.get("WorkingDir") or "/", user=new.config.get("User") or "",
                     binds=binds, network="none" if network == "none" else "private", label=f"{ins.line}")
    made = run_step(b.ctx.containers, req, lambda upper, skip, id_of: take_upper(b, new, upper, skip, id_of),
                    where=ins.where, progress=b.ctx.progress)
    shown = ins.args[0] if not ins.json_form else json.dumps(ins.args)
    b.history(new, f"RUN {shown}", empty=not made)
    b.record(new)
    return new


def _copy(b: Builder, ins: Instruction, st: State) -> State:
    from flex.runtime.build.copy import copy_step

    return copy_step(b, ins, st)


_HANDLERS: dict[str, Any] = {
    "ARG": _arg, "ENV": _env, "LABEL": _label, "MAINTAINER": _maintainer, "USER": _user, "STOPSIGNAL": _stopsignal,
    "EXPOSE": _expose, "VOLUME": _volume, "CMD": _cmd, "ENTRYPOINT": _entrypoint, "SHELL": _shell,
    "ONBUILD": _onbuild, "HEALTHCHECK": _healthcheck, "WORKDIR": _workdir, "RUN": _run, "COPY": _copy,
    "ADD": _copy,
}
