"""Benchmark: reading a devcontainer.json, flex against the reference CLI, side by side in one run.

    .venv/bin/python -m bench.devcontainer_read [--runs N]

Whole-process times (what a person waits for) of `flex config read --json` and of the anchor
`devcontainer read-configuration` (@devcontainers/cli, installed by installer/install.sh --dev), both on
examples/python; plus the in-process cost of flex's pipeline (find, parse, substitute, validate) per
config, and of the JSONC parser anchored against the standard library's `json.loads` (C accelerated) of
the same document written as plain JSON. Medians; ratios are flex / anchor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "python"
REFERENCE = REPO / ".cache" / "devcontainers-cli" / "node_modules" / ".bin" / "devcontainer"


def _median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _process(cmd: list[str]) -> Callable[[], object]:
    return lambda: subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs

    from flex.devcontainer.config import find_config, read_config
    from flex.devcontainer.jsonc import parse
    from flex.devcontainer.schema import load_schema

    rows: list[tuple[str, float, str, float | None]] = []
    flex_cmd = [sys.executable, "-m", "flex", "config", "read", "--workspace-folder", str(EXAMPLE), "--json"]
    ref_cmd = [str(REFERENCE), "read-configuration", "--workspace-folder", str(EXAMPLE), "--docker-path", "/bin/true"]
    flex_s = _median(_process(flex_cmd), runs)
    ref_s = _median(_process(ref_cmd), runs) if REFERENCE.exists() else None
    rows.append(("flex config read --json (process)", flex_s, "devcontainer read-configuration", ref_s))
    py_s = _median(_process([sys.executable, "-c", "pass"]), runs)
    rows.append(("  of which python start-up", py_s, "", None))

    load_schema()
    read_config(EXAMPLE, env={})  # warm: schema compiled, modules imported
    text = find_config(EXAMPLE).read_text()
    plain = json.dumps(parse(text).value, indent=2)  # the same document as plain JSON, for the stdlib
    parse_s = _median(lambda: parse(text), runs * 10)
    loads_s = _median(lambda: json.loads(plain), runs * 10)
    rows.append(("jsonc.parse() with positions", parse_s, "json.loads (C) of the same JSON", loads_s))
    inner = _median(lambda: read_config(EXAMPLE, env={}), runs * 10)
    rows.append(("read_config() in process (warm)", inner, "", None))

    print(f"{'measure':<38}{'flex':>10}  {'anchor':<34}{'anchor time':>12}{'ratio':>8}")
    for name, ours, anchor, theirs in rows:
        ratio = f"{ours / theirs:.2f}" if theirs else "-"
        anchor_time = f"{theirs * 1000:.2f} ms" if theirs else ("not installed" if anchor else "")
        print(f"{name:<38}{ours * 1000:>7.2f} ms  {anchor:<34}{anchor_time:>12}{ratio:>8}")


if __name__ == "__main__":
    main()
