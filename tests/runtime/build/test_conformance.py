"""Conformance with buildah: a corpus of Dockerfiles built by `buildah bud --layers` and by
`flex image build`, both pushed to a real registry; the root filesystems (paths, types, modes, owners,
link targets, content, xattrs) and the image configs are compared field by field. The deliberate
differences are listed in docs/build.md ("Differences from buildah"); the test names each one it skips.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.runtime.build.conftest import Builds
from tests.runtime.build.oci_tree import config_fields, fetch
from tests.runtime.images.conftest import RegistryServer, start_registry, stop

CORPUS: dict[str, tuple[str, dict[str, str]]] = {
    "config": ("""\
ARG BASE
FROM $BASE
MAINTAINER someone@example.com
ENV A=1 B="two words" PATH=/opt/bin:$PATH
ENV C $A-x
ARG V=3
LABEL l1=v1 "l 2"="v 2" from.arg=$V
EXPOSE 80 53/udp 8080/tcp
VOLUME /data /cache
VOLUME ["/json"]
STOPSIGNAL SIGTERM
WORKDIR /w
WORKDIR sub
RUN pwd > /workdir-seen
USER 1000:1000
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD ["true"]
ONBUILD RUN echo hi
ENTRYPOINT ["/bin/echo"]
CMD ["a", "b"]
""", {}),
    "files": ("""\
ARG BASE
FROM $BASE
RUN mkdir -p /t/d && echo x > /t/f && ln -s f /t/l && ln /t/f /t/h && mkfifo /t/p \\
 && chmod 4755 /t/f && chown 1000:2000 /t/d && chmod 1777 /t/d
RUN rm /etc/issue.net && rm -rf /usr/share/doc/bash && mkdir -p /usr/share/doc/bash \\
 && echo new > /usr/share/doc/bash/README && rm -rf /var/lib/apt/lists && mkdir /var/lib/apt/lists
RUN ["/bin/sh", "-c", "echo exec > /exec"]
ARG WHO=world
RUN echo "hello $WHO" > /greeting
""", {}),
    "copy": ("""\
ARG BASE
FROM $BASE
COPY a.txt /c/
COPY dir /c/dir
COPY --chown=1000:1000 dir /c/owned
COPY --chown=nobody:nogroup a.txt /c/nobody.txt
COPY --chmod=0640 a.txt /c/mode.txt
COPY *.md /c/md/
COPY dir/ /c/flat
ADD arch.tar.gz /c/unpacked/
ADD a.txt /c/added.txt
COPY . /ctx
""", {"a.txt": "a\n", "dir/x": "x\n", "dir/sub/y": "y\n", "one.md": "1\n", "two.md": "2\n",
      "build.log": "no\n", "keep.log": "yes\n", "secret/key": "no\n",
      ".dockerignore": "*.log\n!keep.log\nsecret/\n"}),
    "stages": ("""\
ARG BASE
FROM $BASE AS build
RUN mkdir /out && echo built > /out/x && ln -s x /out/y
FROM build AS mid
RUN echo mid > /out/mid
FROM $BASE AS other
RUN echo other > /other
FROM $BASE
COPY --from=build /out /from-build
COPY --from=mid /out/mid /mid
COPY --from=1 /out/x /by-index
COPY --from={tiny} /hello /hello-from-image
""", {}),
}

BUILDAH_ARGS = ["--storage-driver", "overlay"]
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# Deliberate differences in the root filesystem (docs/build.md, "Differences from buildah"): buildah leaves
# the empty mount points it bind-mounts over during RUN in the layer when the image lacks them; flex
# leaves nothing of its mounts behind.
BUILDAH_ONLY = {"etc/hosts": "RUN mount point", "etc/resolv.conf": "RUN mount point",
                "etc/hostname": "RUN mount point"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    stop(reg.proc)


def _buildah(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run"), *BUILDAH_ARGS, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd="/")
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _context(root: Path, name: str, files: dict[str, str], dockerfile: str) -> Path:
    d = root / "contexts" / name
    d.mkdir(parents=True)
    (d / "Dockerfile").write_text(dockerfile)
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    if name == "copy":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for member, data in (("pkg/", b""), ("pkg/bin", b"#!/bin/sh\n"), ("pkg/lib/z", b"z")):
                ti = tarfile.TarInfo(member.rstrip("/"))
                ti.type = tarfile.DIRTYPE if member.endswith("/") else tarfile.REGTYPE
                ti.mode, ti.uid, ti.gid, ti.size = (0o755 if ti.isdir() or member == "pkg/bin" else 0o644), 7, 8, \
                    len(data)
                t.addfile(ti, io.BytesIO(data) if data else None)
        (d / "arch.tar.gz").write_bytes(buf.getvalue())
        (d / "dir" / "x").chmod(0o600)
    return d


@pytest.fixture(scope="module")
def built(root_builds: Builds, registry: RegistryServer, build_root: Path) -> Iterator[dict[str, tuple[str, str]]]:
    """name → (flex's ref, buildah's ref) in the registry, for every corpus entry."""
    if shutil.which("buildah") is None:
        missing("buildah is not installed (installer/install.sh --dev)")
    b, host = root_builds, registry.host
    bh = build_root / "buildah"
    try:
        yield from _build_all(b, host, bh, build_root)
    finally:  # buildah leaves its storage mounted (and a failed step's container) behind
        subprocess.run(["buildah", "--root", str(bh / "storage"), "--runroot", str(bh / "run"), *BUILDAH_ARGS,
                        "rm", "--all"], capture_output=True, cwd="/")
        subprocess.run(["umount", "-R", "-l", str(bh / "storage" / "overlay")], capture_output=True)


def _build_all(b: Builds, host: str, bh: Path, build_root: Path) -> Iterator[dict[str, tuple[str, str]]]:
    base = f"{host}/minbase:1"
    b.ok("image", "push", b.base, base)
    tiny_ctx = build_root / "contexts" / "tiny"
    tiny_ctx.mkdir(parents=True)
    (tiny_ctx / "hello").write_text("hello from an image\n")
    (tiny_ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    tiny = f"{host}/tiny:1"
    b.ok("image", "build", "-t", tiny, "--push", str(tiny_ctx))
    out: dict[str, tuple[str, str]] = {}
    for name, (dockerfile, files) in CORPUS.items():
        ctx = _context(build_root, name, files, dockerfile.replace("{tiny}", tiny))
        flex_ref, buildah_ref = f"{host}/flex/{name}:1", f"{host}/buildah/{name}:1"
        b.ok("image", "build", "--push", "-t", flex_ref, "--build-arg", f"BASE={b.base}", str(ctx))
        _buildah(bh, "bud", "--layers", "--format", "docker", "--isolation", "chroot", "--tls-verify=false",
                 "--build-arg", f"BASE={base}", "-t", f"localhost/{name}", str(ctx))
        _buildah(bh, "push", "--tls-verify=false", f"localhost/{name}", f"docker://{buildah_ref}")
        out[name] = (flex_ref, buildah_ref)
    yield out


def _tree(host: str, ref: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[str]]:
    return fetch(host, ref)


def _diff(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: flex {a.get(k)} / buildah {b.get(k)}")
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_same_as_buildah(name: str, built: dict[str, tuple[str, str]], registry: RegistryServer) -> None:
    flex_ref, buildah_ref = built[name]
    f_tree, f_cfg, f_types = _tree(registry.host, flex_ref)
    b_tree, b_cfg, _ = _tree(registry.host, buildah_ref)
    assert all(t.endswith("+zstd") for t in f_types[1:]), f_types  # the base keeps its layer; ours are zstd
    for path, why in BUILDAH_ONLY.items():
        if path not in f_tree and b_tree.get(path, {}).get("sha256") == EMPTY:
            del b_tree[path]  # (why: see BUILDAH_ONLY)
            assert why
    diffs = _diff(f_tree, b_tree)
    f_conf, b_conf = config_fields(f_cfg), config_fields(b_cfg)
    # ENV of a name already set: flex replaces it in place, as Docker does; buildah moves it to the end
    f_conf["Env"], b_conf["Env"] = sorted(f_conf.get("Env", [])), sorted(b_conf.get("Env", []))
    diffs += [f"config {k}: flex {f_conf.get(k)} / buildah {b_conf.get(k)}" for k in sorted(set(f_conf) | set(b_conf))
              if f_conf.get(k) != b_conf.get(k)]
    assert not diffs, "images differ:\n" + "\n".join(diffs[:40])

