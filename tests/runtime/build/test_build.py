"""`flex image build`: the first slice (FROM, ARG, ENV, WORKDIR, COPY, RUN, USER, LABEL) and its cache,
as root and rootless, checked by running the image and reading its config."""

from __future__ import annotations

import json

from tests.runtime.build.conftest import Builds

DOCKERFILE = """\
FROM flextest/minbase:1
ARG GREETING=hello
ENV APP=/srv/app SPACED="a b"
WORKDIR $APP
COPY a.txt sub ./
RUN echo "$GREETING $SPACED $(id -u)" > out.txt && rm -f /etc/issue.net && chmod 4755 out.txt
USER nobody
LABEL org.example.kind=test "with space"="yes"
CMD ["cat", "out.txt"]
"""


def _inspect(b: Builds, name: str) -> dict[str, object]:
    return json.loads(b.ok("image", "inspect", "--json", name))  # type: ignore[no-any-return]


def test_build_runs_and_is_cached(builds: Builds) -> None:
    ctx = builds.context("slice", {"Dockerfile": DOCKERFILE, "a.txt": "A\n", "sub/b.txt": "B\n",
                                   "sub/ignored.txt": "no\n", ".dockerignore": "sub/ignored.txt\n"})
    first = builds.build(ctx, "-t", "slice:1", "--build-arg", "GREETING=hi")
    assert first.code == 0, first.stderr
    out = builds.ok("runtime", "run", "--rm", "--net", "none", "slice:1")
    assert out == "hi a b 0\n"
    listing = builds.ok("runtime", "run", "--rm", "--net", "none", "slice:1", "sh", "-c",
                        "id -un; pwd; ls /srv/app; stat -c '%a %U' out.txt; test -e /etc/issue.net || echo gone")
    assert listing.split("\n") == ["nobody", "/srv/app", "a.txt", "b.txt", "out.txt", "4755 root", "gone", ""]
    cfg = _inspect(builds, "slice:1")["config"]
    assert isinstance(cfg, dict)
    assert cfg["workingDir"] == "/srv/app" and cfg["user"] == "nobody" and cfg["cmd"] == ["cat", "out.txt"]
    assert "APP=/srv/app" in cfg["env"] and "SPACED=a b" in cfg["env"]
    assert not any(e.startswith("GREETING=") for e in cfg["env"])  # build args are not image env

    again = builds.build(ctx, "-t", "slice:2", "--build-arg", "GREETING=hi")
    assert again.code == 0, again.stderr
    assert "RUN (cached)" in again.stderr and "COPY (cached)" in again.stderr
    assert again.stdout.split("@")[1] == first.stdout.split("@")[1]  # the same image, digest for digest

    other = builds.build(ctx, "-t", "slice:3", "--build-arg", "GREETING=yo")  # an arg RUN sees: RUN again
    assert other.code == 0, other.stderr
    assert "COPY (cached)" in other.stderr and "RUN (cached)" not in other.stderr
    assert builds.ok("runtime", "run", "--rm", "--net", "none", "slice:3") == "yo a b 0\n"


def test_changed_source_rebuilds_from_its_copy(root_builds: Builds) -> None:
    b = root_builds
    files = {"Dockerfile": "FROM flextest/minbase:1\nRUN echo base > /base\nCOPY src /src\nRUN cat /src/f > /g\n",
             "src/f": "one\n"}
    ctx = b.context("changed", files)
    assert b.build(ctx, "-t", "changed:1").code == 0
    (ctx / "src" / "f").write_text("two\n")
    r = b.build(ctx, "-t", "changed:2")
    assert r.code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("Dockerfile:")]
    assert lines[0] == "Dockerfile:2: RUN (cached)"
    assert lines[1].startswith("Dockerfile:3: COPY src /src") and "cached" not in lines[1]
    assert b.ok("runtime", "run", "--rm", "--net", "none", "changed:2", "cat", "/g") == "two\n"
    (ctx / "src" / "f").chmod(0o600)  # a mode is part of a source
    assert "COPY (cached)" not in b.build(ctx, "-t", "changed:3").stderr

    # the cache outlives the images: prune keeps it (its lease), --build-cache empties it
    b.ok("image", "rm", "changed:1", "changed:2", "changed:3")
    b.ok("image", "prune")
    assert "Dockerfile:4: RUN (cached)" in b.build(ctx, "-t", "changed:4").stderr
    b.ok("image", "rm", "changed:4")
    out = b.ok("image", "prune", "--build-cache")
    assert out.startswith("forgot ") and not out.startswith("forgot 0 ")
    r = b.build(ctx, "-t", "changed:5")
    assert r.code == 0 and "(cached)" not in r.stderr, r.stderr


def test_bind_mount_enters_the_key_by_content(root_builds: Builds) -> None:
    b = root_builds
    df = ("FROM flextest/minbase:1\n"
          "RUN --mount=type=bind,source=feature,target=/feature sh /feature/install.sh\n")
    ctx = b.context("bind", {"Dockerfile": df, "feature/install.sh": "echo v1 > /installed\n"})
    assert b.build(ctx, "-t", "bind:1").code == 0
    assert b.ok("runtime", "run", "--rm", "--net", "none", "bind:1", "sh", "-c",
                "cat /installed; ls /feature 2>/dev/null | wc -l") == "v1\n0\n"
    assert "RUN (cached)" in b.build(ctx, "-t", "bind:2").stderr
    (ctx / "feature" / "install.sh").write_text("echo v2 > /installed\n")
    r = b.build(ctx, "-t", "bind:3")
    assert "RUN (cached)" not in r.stderr
    assert b.ok("runtime", "run", "--rm", "--net", "none", "bind:3", "cat", "/installed") == "v2\n"


def test_bad_input_gets_one_line(root_builds: Builds) -> None:
    b = root_builds
    ctx = b.context("bad", {"Dockerfile": "FROM flextest/minbase:1\n\nFROBNICATE x\n"})
    r = b.build(ctx)
    assert r.code == 7 and "Dockerfile:3: unknown instruction 'FROBNICATE'" in r.stderr
    assert "Traceback" not in r.stderr
    ctx = b.context("fails", {"Dockerfile": "FROM flextest/minbase:1\nRUN echo out-line; exit 3\n"})
    r = b.build(ctx)
    assert r.code == 1
    assert "Dockerfile:2: RUN 'echo out-line; exit 3' failed with exit code 3" in r.stderr
    assert "out-line" in r.stderr.split("failed with exit code 3")[1]
