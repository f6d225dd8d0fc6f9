"""COPY and ADD: sources from the context (or a stage / an image with ``--from``) → one layer.

Docker's rules: a directory source copies its contents; several sources or a destination ending in
``/`` (or an existing directory) put each source inside it; missing parent directories are created
(root, 0755); ``--chown`` takes names from the image's /etc/passwd and /etc/group, ``--chmod`` an octal
mode; context files become root-owned. The step key covers every selected entry's name, type, mode
and content, plus --chown/--chmod and the destination.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import stat
from pathlib import Path

from flex.errors import InvalidArgument, NotFound
from flex.runtime.build.add import download, emit_archive, is_archive
from flex.runtime.build.builder import Builder
from flex.runtime.build.context import Source, hash_tree, match_sources, walk_source
from flex.runtime.build.expand import expand_word
from flex.runtime.build.layer import TarWriter
from flex.runtime.build.merged import MergedView
from flex.runtime.build.parser.instruction import Instruction
from flex.runtime.build.state import State, step_key
from flex.runtime.build.steps import abs_path, lookup_path, lowers_of, missing_dirs
from flex.runtime.containers.rootfs import lookup_user

__all__ = ["copy_step"]


def _chmod(value: str | None, ins: Instruction) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise InvalidArgument(f"{ins.where}: --chmod={value}: expected an octal mode") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"{ins.where}: --chmod={value}: out of range")
    return mode


def copy_step(b: Builder, ins: Instruction, st: State) -> State:
    env = {**st.args, **st.env()}
    if ins.heredocs:
        words = [w for w in b.words(ins, st) if not w.startswith("<<")]
        srcs_words, dest_raw = [], words[-1] if words else ""
    elif ins.json_form:
        words = [b.word(w, ins, st) for w in ins.args]
        srcs_words, dest_raw = words[:-1], words[-1] if words else ""
    else:
        words = b.words(ins, st)
        srcs_words, dest_raw = words[:-1], words[-1] if words else ""
    if not srcs_words and not ins.heredocs:
        raise InvalidArgument(f"{ins.where}: {ins.cmd} needs at least one source and a destination")
    workdir = st.config.get("WorkingDir") or "/"
    dest = abs_path(dest_raw, workdir)
    dest_is_dir = dest_raw.endswith("/") or len(srcs_words) + len(ins.heredocs) > 1 or dest_raw in (".", "./")
    chown = b.word(ins.flag("chown") or "", ins, st)
    chmod = _chmod(ins.flag("chmod"), ins)
    frm = ins.flag("from")
    if ins.flag("checksum") and ins.cmd != "ADD":
        raise InvalidArgument(f"{ins.where}: --checksum is a flag of ADD")
    h = hashlib.sha256()
    urls: list[tuple[str, Path, float | None]] = []
    archives: set[str] = set()
    if ins.heredocs:
        for hd in ins.heredocs:
            h.update(hd.name.encode() + b"\0" + hd.content.encode() + b"\1")
        sources: list[Source] = []
        view = None
    elif frm:
        src_state = b.source_state(frm, ins)
        view = b.view(src_state)
        h.update(src_state.key.encode())
        sources = _view_sources(view, srcs_words, ins, src_state.config.get("WorkingDir") or "/")
    else:
        view = None
        sources = []
        for w in srcs_words:
            if ins.cmd == "ADD" and w.startswith(("http://", "https://")):
                path, mtime = download(w, ins.flag("checksum"), b.ctx.images.home.tmp, ins.where)
                b.cleanup.append(path)
                urls.append((w, path, mtime))
                h.update(w.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
                continue
            if w.startswith(("http://", "https://", "git@")):
                raise InvalidArgument(f"{ins.where}: COPY takes no URLs", hint="use ADD for a URL")
            sources.extend(match_sources(b.ctx.context, w, b.ctx.ignore, ins.where))
        for s in sources:
            hash_tree(walk_source(s, b.ctx.ignore), h)
        if ins.cmd == "ADD":
            archives = {s.rel for s in sources if is_archive(s.path)}
    if len(sources) + len(urls) > 1:
        dest_is_dir = True
    key = step_key(st.key, ins.cmd, [s.rel for s in sources] + [u for u, _, _ in urls], dest, dest_is_dir, chown,
                   chmod, frm or "", h.hexdigest(), sorted(archives))
    hit = b.lookup(key, st)
    if hit is not None:
        b.say(f"{ins.where}: {ins.cmd} (cached)")
        return hit
    b.say(f"{ins.where}: {ins.original}")
    new = st.restore(key, st.saved())
    lowers = lowers_of(b, new)
    existing = lookup_path(lowers, dest)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        dest_is_dir = True
    shift = b.unshift()
    uid = gid = 0
    if chown:
        uid, gid, _ = lookup_user(lowers, chown)

    def make(tar: Path) -> int:
        count = 0
        with open(tar, "wb") as f:
            w = TarWriter(f, b.epoch)
            parent = dest if dest_is_dir else posixpath.dirname(dest)
            for d in missing_dirs(lowers, parent):
                w.add_dir(d.lstrip("/") + "/", 0o755, 0, 0, _mtime(b))
                count += 1
            if ins.heredocs:
                for hd in ins.heredocs:
                    body = expand_word(hd.content, env, where=ins.where) if hd.expand else hd.content
                    target = posixpath.join(dest, hd.name) if dest_is_dir else dest
                    w.add_bytes(target.lstrip("/"), body.encode(), 0o644 if chmod is None else chmod, uid, gid,
                                _mtime(b))
                    count += 1
            for url, path, mtime in urls:
                base = posixpath.basename(url.split("?")[0].rstrip("/")) or "index.html"
                target = posixpath.join(dest, base) if dest_is_dir else dest
                w.add_bytes(target.lstrip("/"), path.read_bytes(), 0o600 if chmod is None else chmod, uid, gid,
                            mtime if mtime is not None else _mtime(b))
                count += 1
            for s in sources:
                if s.rel in archives:
                    for d in missing_dirs(lowers, dest):
                        if d != dest or not dest_is_dir:
                            w.add_dir(d.lstrip("/") + "/", 0o755, 0, 0, _mtime(b))
                    count += emit_archive(w, s.path, dest, owner=(uid, gid) if chown else None, where=ins.where,
                                          exists=lambda p: lookup_path(lowers, p) is not None)
                    continue
                for rel, path, est in walk_source(s, b.ctx.ignore) if view is None else view.walk(s.rel):
                    if rel == "" and s.is_dir:
                        target = dest
                        if lookup_path(lowers, dest) is not None:
                            continue  # the directory exists: its contents go in, it keeps its own mode
                    elif rel == "":
                        target = posixpath.join(dest, posixpath.basename(s.rel)) if dest_is_dir else dest
                    else:
                        target = posixpath.join(dest, rel)
                    name = target.lstrip("/")
                    if not name:
                        continue
                    if stat.S_ISDIR(est.st_mode):
                        name += "/"
                    if view is not None and not chown:
                        fuid, fgid = est.st_uid, est.st_gid  # --from keeps owners, as Docker does
                        if shift is not None:
                            fuid, fgid = shift(fuid), shift(fgid)
                    else:
                        fuid, fgid = uid, gid
                    w.add_path(name, str(path), est, fuid, fgid, None, chmod)
                    count += 1
            w.close()
        return count

    made = b.with_tar(new, make)
    shown = json.dumps(srcs_words) if ins.json_form else " ".join(srcs_words)
    b.history(new, f"{ins.cmd} {shown} {dest_raw}".replace("  ", " "), empty=not made)
    b.record(new)
    return new


def _mtime(b: Builder) -> int:
    import time

    return b.epoch if b.epoch is not None else int(time.time())




def _view_sources(view: MergedView, words: list[str], ins: Instruction, workdir: str) -> list[Source]:
    import fnmatch

    out: list[Source] = []
    for w in words:
        path = posixpath.normpath(posixpath.join(workdir, w)).lstrip("/")
        if any(c in path for c in "*?["):
            parent, pattern = posixpath.split(path)
            names = [n for n in view.listdir(parent) if fnmatch.fnmatchcase(n, pattern)]
            matches = [posixpath.join(parent, n) for n in names]
        else:
            matches = [path] if view.lstat(path) is not None else []
        if not matches:
            raise NotFound(f"{ins.where}: {w!r} not found in --from={ins.flag('from')}")
        for m in matches:
            st = view.lstat(m)
            out.append(Source(Path("/") / m, m or ".", st is not None and stat.S_ISDIR(st.st_mode)))
    return out
