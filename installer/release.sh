#!/usr/bin/env bash
# Build a release to install from, without a checkout:
#   dist/flex-VERSION-py3-none-any.whl   the package
#   dist/flex-VERSION.tar.gz             flex-VERSION/{installer/, wheels/, docs/install.md, README.md}
# Install: tar xzf flex-VERSION.tar.gz && sudo flex-VERSION/installer/install.sh --server (or --runner ...).
#   installer/release.sh [OUT_DIR]      (default: dist/ in the checkout)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$here/dist}" && cd "${1:-$here/dist}" && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/pyproject.toml" | head -n1)
[ -n "$version" ] || { echo "release.sh: no version in $here/pyproject.toml" >&2; exit 1; }
py=${PYTHON:-}
for cand in "$here/.venv/bin/python" /opt/flex/venv/bin/python python3; do
  [ -z "$py" ] && "$cand" -m pip --version >/dev/null 2>&1 && py=$cand
done
[ -n "$py" ] || { echo "release.sh: no Python with pip (run installer/install.sh first)" >&2; exit 1; }

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Build from a copy: the checkout keeps no build/ or egg-info, and a dirty worktree's stray files stay out.
git -C "$here" ls-files -z --cached --others --exclude-standard 2>/dev/null | (cd "$here" && xargs -0 cp --parents -t "$tmp" 2>/dev/null) ||
  cp -r "$here/." "$tmp/"
mkdir -p "$tmp/src" && (cd "$tmp" && find . -mindepth 1 -maxdepth 1 ! -name src -exec mv {} src/ \;)
iso=""  # setuptools and wheel at hand: no build environment to fetch
"$py" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 71)' 2>/dev/null && iso=--no-build-isolation
"$py" -m pip wheel -q --disable-pip-version-check --no-deps $iso -w "$tmp/wheels" "$tmp/src"
wheel=$(ls "$tmp"/wheels/flex-"$version"-*.whl)

stage=$tmp/stage/flex-$version
mkdir -p "$stage/installer/lib" "$stage/installer/units" "$stage/wheels" "$stage/docs"
cp "$here"/installer/*.sh "$stage/installer/"
cp "$here"/installer/lib/*.sh "$stage/installer/lib/"
cp "$here"/installer/units/*.service "$stage/installer/units/"
cp "$wheel" "$stage/wheels/"
cp "$here/README.md" "$stage/"
[ -e "$here/docs/install.md" ] && cp "$here/docs/install.md" "$stage/docs/"
cp "$wheel" "$out/"
tar -C "$tmp/stage" --owner=0 --group=0 -czf "$out/flex-$version.tar.gz" "flex-$version"
echo "$out/$(basename "$wheel")"
echo "$out/flex-$version.tar.gz"
