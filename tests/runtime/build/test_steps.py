"""`flex image build` beyond what buildah 1.28 can be compared on: heredocs, RUN --network/--mount
(secret, cache, tmpfs), stages the target does not need, --target, SOURCE_DATE_EPOCH, gzip layers."""

from __future__ import annotations

import json

from tests.runtime.build.conftest import Builds


def _run(b: Builds, image: str, script: str) -> str:
    return b.ok("runtime", "run", "--rm", "--net", "none", image, "sh", "-c", script)


def test_heredocs_network_and_mounts(root_builds: Builds) -> None:
    b = root_builds
    df = """\
# syntax=docker/dockerfile:1
FROM flextest/minbase:1 AS base
ARG WHO=world
RUN <<EOF
echo "hello $WHO" > /greeting
echo second >> /greeting
EOF
COPY <<EOF /etc/from-heredoc
built for ${WHO}
EOF
RUN --network=none sh -c 'ls /sys/class/net > /ifaces'
RUN --mount=type=secret,id=token cat /run/secrets/token > /dev/null && wc -c < /run/secrets/token > /secret-size
RUN --mount=type=secret,id=token,target=/tmp/tok test -s /tmp/tok
RUN --mount=type=cache,target=/var/cache/thing \
    sh -c 'date +%s%N >> /var/cache/thing/runs; wc -l < /var/cache/thing/runs > /runs'
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo x > /scratch/y'

FROM flextest/minbase:1 AS never
RUN exit 42

FROM base AS final
RUN echo final > /final
"""
    ctx = b.context("steps", {"Dockerfile": df, "token.txt": "s3cr3t-value\n"})
    r = b.build(ctx, "-t", "steps:1", "--build-arg", "WHO=flex", "--secret", f"id=token,src={ctx / 'token.txt'}")
    assert r.code == 0, r.stderr
    assert "exit 42" not in r.stderr and "stage never" not in r.stderr  # a stage the target does not need
    out = _run(b, "steps:1", "cat /greeting /etc/from-heredoc /ifaces /secret-size /runs /final; "
                             "ls -A /run/secrets /scratch /var/cache/thing /tmp/tok 2>&1 | sort")
    lines = out.splitlines()
    assert lines[:7] == ["hello flex", "second", "built for flex", "lo", "13", "1", "final"]
    assert "s3cr3t-value" not in out
    # nothing of the mounts is left in the image: not the secret, not the cache, not the tmpfs
    assert all("No such file" in line for line in lines[7:]) and len(lines) == 11, lines[7:]
    layers = json.loads(b.ok("image", "inspect", "--json", "steps:1"))["layers"]
    assert all(lay["mediaType"].endswith("+zstd") for lay in layers[1:])

    again = b.build(ctx, "-t", "steps:2", "--build-arg", "WHO=flex", "--no-cache", "--target", "base",
                    "--secret", f"id=token,src={ctx / 'token.txt'}")
    assert again.code == 0, again.stderr
    assert "(cached)" not in again.stderr
    assert _run(b, "steps:2", "cat /runs; test -e /final || echo no-final") == "2\nno-final\n"  # the cache mount kept


def test_source_date_epoch_reproducible_and_gzip(root_builds: Builds) -> None:
    b = root_builds
    df = "FROM flextest/minbase:1\nRUN mkdir /r && echo x > /r/f && rm /etc/issue.net\nCOPY f /r/copied\n"
    ctx = b.context("repro", {"Dockerfile": df, "f": "content\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    one = b.build(ctx, "-t", "repro:1", "--no-cache", "--json", env=env)
    two = b.build(ctx, "-t", "repro:2", "--no-cache", "--json", env=env)
    assert one.code == 0 and two.code == 0, one.stderr + two.stderr
    d1, d2 = json.loads(one.stdout), json.loads(two.stdout)
    assert d1["manifestDigest"] == d2["manifestDigest"] and d1["imageId"] == d2["imageId"]
    assert _run(b, "repro:1", "stat -c %Y /r/f /r/copied") == "1700000000\n1700000000\n"
    gz = b.build(ctx, "-t", "repro:gz", "--no-cache", "--compression", "gzip", "--json", env=env)
    assert gz.code == 0, gz.stderr
    layers = json.loads(b.ok("image", "inspect", "--json", "repro:gz"))["layers"]
    assert [lay["mediaType"] for lay in layers[1:]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    assert json.loads(gz.stdout)["imageId"] == d1["imageId"]  # the same diff_ids: the same image config


def test_build_toml_mounts_and_env_reach_run_only(root_builds: Builds) -> None:
    b = root_builds
    ctx = b.context("settings", {"Dockerfile": "FROM flextest/minbase:1\n"
                                               "RUN cat /etc/corp/ca.pem > /seen && echo \"$CORP_PROXY\" >> /seen\n",
                                 "ca.pem": "-----BEGIN CERTIFICATE-----\n"})
    settings = b.mode.home / "build.toml"
    settings.write_text(f'mounts = ["{ctx / "ca.pem"}:/etc/corp/ca.pem"]\n[env]\nCORP_PROXY = "http://proxy:3128"\n')
    try:
        r = b.build(ctx, "-t", "settings:1")
        assert r.code == 0, r.stderr
        out = _run(b, "settings:1", "cat /seen; ls /etc/corp 2>&1; env | grep -c CORP_PROXY || true")
        assert out.splitlines() == ["-----BEGIN CERTIFICATE-----", "http://proxy:3128",
                                    "ls: cannot access '/etc/corp': No such file or directory", "0"]
        cfg = json.loads(b.ok("image", "inspect", "--json", "settings:1"))["config"]
        assert not any("CORP_PROXY" in e for e in cfg["env"])
        settings.write_text("mounts = [\"relative:/x\"]\n")
        bad = b.build(ctx, "-t", "settings:2")
        assert bad.code == 7 and f"{settings}: mount 'relative:/x': expected an absolute SRC:DST" in bad.stderr
    finally:
        settings.unlink()


def test_add_url_with_checksum(root_builds: Builds) -> None:
    import hashlib
    import http.server
    import threading

    body = b"downloaded content\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # no reverse DNS, no noise
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/files/tool.txt"
        good = "sha256:" + hashlib.sha256(body).hexdigest()
        b = root_builds
        ctx = b.context("addurl", {"Dockerfile": f"FROM flextest/minbase:1\nADD --checksum={good} {url} /opt/\n"})
        r = b.build(ctx, "-t", "addurl:1")
        assert r.code == 0, r.stderr
        assert _run(b, "addurl:1", "cat /opt/tool.txt; stat -c '%a %Y' /opt/tool.txt") == \
            "downloaded content\n600 1700000000\n"
        bad = "sha256:" + "0" * 64
        (ctx / "Dockerfile").write_text(f"FROM flextest/minbase:1\nADD --checksum={bad} {url} /opt/\n")
        r = b.build(ctx, "-t", "addurl:2")
        assert r.code == 7 and f"Dockerfile:2: ADD {url}: checksum mismatch" in r.stderr
    finally:
        server.shutdown()
        server.server_close()
