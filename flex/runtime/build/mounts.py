"""``RUN --mount=type=bind|cache|secret|tmpfs,...``: parsed, resolved, and keyed by what they bring in.

A bind mount from the context (or from a stage's or image's filesystem, ``from=``) enters the step's
cache key by its content (names, modes, bytes), so a step that only mounts a folder — a feature's
install script — is rebuilt exactly when that folder changes. Secrets are keyed by id only (their
content never enters a key, a layer or a log). Cache mounts persist per id under FLEX_HOME/build-cache-mounts.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flex.errors import InvalidArgument, NotFound
from flex.runtime.build.context import hash_tree, match_sources, walk_source
from flex.runtime.build.expand import expand_word
from flex.runtime.build.parser.instruction import Instruction
from flex.runtime.build.state import State

if TYPE_CHECKING:
    from flex.runtime.build.builder import Builder

__all__ = ["RunMount", "parse_run_mounts"]


@dataclass
class RunMount:
    kind: str
    target: str
    source: Path | None   # host path to bind (None for tmpfs)
    readonly: bool
    key: list[str]        # what enters the step's cache key


def _fields(text: str, ins: Instruction) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        k, eq, v = part.partition("=")
        k = k.strip().lower()
        if not k:
            continue
        out[k] = v if eq else "true"
    return out


def parse_run_mounts(b: Builder, ins: Instruction, st: State, env: dict[str, str]) -> list[RunMount]:
    out = []
    workdir = st.config.get("WorkingDir") or "/"
    for raw in ins.flags.get("mount", []):
        f = _fields(expand_word(raw, env, where=ins.where), ins)
        kind = f.pop("type", "bind")
        target = f.pop("target", f.pop("dst", f.pop("destination", "")))
        if kind == "secret":
            sid = f.get("id", "")
            if not target:
                target = f"/run/secrets/{sid}"
            if not sid:
                raise InvalidArgument(f"{ins.where}: --mount=type=secret needs id=")
            src = b.ctx.secrets.get(sid)
            if src is None:
                if f.get("required") == "true":
                    raise NotFound(f"{ins.where}: secret {sid!r} was not given", hint=f"--secret id={sid},src=FILE")
                continue
            out.append(RunMount("secret", posixpath.join(workdir, target), src, True, ["secret", sid, target]))
            continue
        if not target:
            raise InvalidArgument(f"{ins.where}: --mount={raw}: target= is required")
        target = posixpath.normpath(posixpath.join(workdir, target))
        if kind == "bind":
            source = f.get("source", f.get("src", "."))
            readonly = f.get("rw", f.get("readwrite", "false")) != "true"
            frm = f.get("from")
            if frm:
                src_state = b.source_state(frm, ins)
                found = b.view(src_state).path(posixpath.normpath("/" + source))
                if found is None:
                    raise NotFound(f"{ins.where}: bind source {source!r} not found in --mount from={frm}")
                host = found  # the topmost layer's copy (a directory merged from several is not)
                h = hashlib.sha256()
                h.update(src_state.key.encode())
                h.update(source.encode())
            else:
                srcs = match_sources(b.ctx.context, source, b.ctx.ignore, ins.where)
                if len(srcs) != 1:
                    raise InvalidArgument(f"{ins.where}: bind source {source!r} matches {len(srcs)} entries")
                host = srcs[0].path
                h = hashlib.sha256()
                hash_tree(walk_source(srcs[0], b.ctx.ignore), h)
            out.append(RunMount("bind", target, host, readonly, ["bind", target, str(readonly), h.hexdigest()]))
        elif kind == "cache":
            cid = f.get("id", target)
            d = b.ctx.images.home.sub("build-cache-mounts") / hashlib.sha256(cid.encode()).hexdigest()[:32]
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o777 if os.geteuid() == 0 else 0o755)
            out.append(RunMount("cache", target, d, False, ["cache", target, cid]))
        elif kind == "tmpfs":
            # an empty scratch directory for this step only (removed when the build ends), like /tmp
            d = Path(tempfile.mkdtemp(prefix="tmpfs-", dir=b.ctx.images.home.tmp))
            d.chmod(0o1777)
            b.cleanup.append(d)
            out.append(RunMount("tmpfs", target, d, False, ["tmpfs", target]))
        else:
            raise InvalidArgument(f"{ins.where}: --mount type {kind!r} is not supported",
                                  hint="flex knows type=bind, cache, secret and tmpfs")
    return out
