"""Install order, as the reference CLI computes it (containerFeaturesOrder.ts; spec "Installation order").

1. The graph: the user's features; each one's ``dependsOn`` are hard edges whose targets join the worklist
   (resolved recursively through ``resolve``); ``installsAfter`` are soft edges, never fetched for.
   A node equal to one already there (same source, digest and options) is dropped.
2. ``overrideFeatureInstallOrder``: the i-th of n entries gives the nodes it soft-matches priority n - i.
3. Soft edges that match no node are dropped.
4. Rounds: the nodes whose hard edges are all installed and whose soft edges are all matched by installed
   nodes; of those only the ones with the round's highest priority; sorted (source, id, tag, options,
   digest: alphabetical, not declaration order) and appended. An empty round is a cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flex.devcontainer.features.reference import FeatureRef, parse_reference
from flex.errors import InvalidConfiguration

__all__ = ["Feature", "Resolved", "compare", "install_order", "locale_compare", "ordered_features", "resolve_graph"]

MAX_FEATURES = 200  # a dependsOn chain from untrusted metadata must not grow without end


@dataclass
class Resolved:
    """What fetching one reference gave: its devcontainer-feature.json, digest and files."""

    metadata: dict[str, Any]
    digest: str  # OCI manifest digest; sha256 of a tarball; sha256 of a local folder's files
    folder: str  # where the feature's files are on this machine
    manifest: dict[str, Any] | None = None


@dataclass(eq=False)
class Feature:
    """One node of the graph: a feature with the options it is installed with."""

    ref: FeatureRef
    options: Any  # as the user (or a dependsOn entry) wrote them
    resolved: Resolved
    depends_on: list[Feature] = field(default_factory=list)
    installs_after: list[FeatureRef] = field(default_factory=list)
    round_priority: int = 0
    user_provided: bool = False

    @property
    def user_id(self) -> str:
        return self.ref.user_id

    @property
    def metadata(self) -> dict[str, Any]:
        return self.resolved.metadata

    @property
    def aliases(self) -> list[str]:
        meta = self.resolved.metadata
        return [meta.get("currentId") or meta.get("id") or self.ref.id, *(meta.get("legacyIds") or [])]


def locale_compare(a: str, b: str) -> int:
    """An approximation of JavaScript's localeCompare: case-insensitive first, then by code point."""
    ka, kb = (a.casefold(), a), (b.casefold(), b)
    return (ka > kb) - (ka < kb)


def _cmp_value(a: Any, b: Any) -> int:
    if isinstance(a, bool) and isinstance(b, bool):
        return 0 if a == b else (1 if a else -1)
    if isinstance(a, str) and isinstance(b, str):
        return locale_compare(a, b)
    return 0


def _cmp_options(a: Any, b: Any) -> int:
    if isinstance(a, str | bool) and type(a) is type(b):
        return _cmp_value(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return len(a) - len(b)
        for ka, kb in zip(sorted(a), sorted(b), strict=True):
            if ka != kb:
                return locale_compare(ka, kb)
            c = _cmp_value(a[ka], b[kb])
            if c:
                return c
        return 0
    return locale_compare(_js_type(a), _js_type(b))


def _js_type(v: Any) -> str:
    return "boolean" if isinstance(v, bool) else "string" if isinstance(v, str) else \
        "undefined" if v is None else "object"


def _cmp_namespace_id(a: Feature, b: Feature) -> int:
    na, nb = f"{a.ref.registry}/{a.ref.namespace}", f"{b.ref.registry}/{b.ref.namespace}"
    if na != nb:
        return locale_compare(na, nb)
    if set(a.aliases) & set(b.aliases):
        return 0
    return locale_compare(a.ref.id, b.ref.id)


def compare(a: Feature, b: Feature) -> int:
    """The reference's compareTo: the order within a round (0: the same feature)."""
    ra, rb = a.ref, b.ref
    if ra.kind != rb.kind:
        return locale_compare(ra.user_id, rb.user_id)
    if ra.kind == "oci":
        if a.resolved.digest == b.resolved.digest and _cmp_options(a.options, b.options) == 0:
            return 0
        c = _cmp_namespace_id(a, b)
        if c:
            return c
        if ra.tag and rb.tag and ra.tag != rb.tag:
            return locale_compare(ra.tag, rb.tag)
        c = _cmp_options(a.options, b.options)
        return c or locale_compare(a.resolved.digest, b.resolved.digest)
    key_a, key_b = (ra.local_path, rb.local_path) if ra.kind == "file-path" else (ra.url, rb.url)
    return locale_compare(key_a, key_b) or _cmp_options(a.options, b.options)


def _equals(a: Feature, b: Feature) -> bool:
    return a.ref.kind == b.ref.kind and compare(a, b) == 0


def _soft_match(node: Feature, dep: FeatureRef) -> bool:
    """Does ``node`` satisfy a soft dependency on ``dep`` (same resource, or a renamed id)?"""
    if node.ref.kind != dep.kind:
        return False
    if dep.kind == "oci":
        if node.ref.resource == dep.resource:
            return True
        # the reference fetches the soft dependency to learn its legacy ids; flex reads the installed
        # node's own aliases instead (no fetch for a feature that may never be installed)
        return node.ref.namespace == dep.namespace and node.ref.registry == dep.registry and dep.id in node.aliases
    if dep.kind == "file-path":
        return node.ref.local_path == dep.local_path
    return node.ref.url == dep.url


def resolve_graph(features: Mapping[str, Any], config_dir: str,
                  resolve: Callable[[FeatureRef], Resolved]) -> list[Feature]:
    """The worklist: the user's features and, recursively, their dependsOn, each resolved once."""
    todo: list[tuple[FeatureRef, Any, Feature | None]] = [
        (parse_reference(uid, config_dir), opts, None) for uid, opts in features.items()]
    out: list[Feature] = []
    seen = 0
    while todo:
        ref, opts, parent = todo.pop(0)
        seen += 1
        if seen > MAX_FEATURES:
            raise InvalidConfiguration(f"more than {MAX_FEATURES} features after following dependsOn")
        node = Feature(ref, opts, resolve(ref), user_provided=parent is None)
        if parent is not None:
            parent.depends_on.append(node)  # the edge holds even when an equal node is already listed
        if any(_equals(n, node) for n in out):
            continue
        meta = node.metadata
        for dep_id, dep_opts in (meta.get("dependsOn") or {}).items():
            todo.append((_dep_ref(dep_id, node, config_dir), dep_opts, node))
        node.installs_after = [_dep_ref(d, node, config_dir) for d in meta.get("installsAfter") or []]
        out.append(node)
    return out


def _dep_ref(dep_id: str, owner: Feature, config_dir: str) -> FeatureRef:
    try:
        return parse_reference(dep_id, config_dir)
    except InvalidConfiguration as err:
        raise InvalidConfiguration(f"feature {owner.user_id!r} depends on {dep_id!r}: {err.message}",
                                   hint=err.hint) from err


def install_order(nodes: list[Feature], override: list[str] | None = None, config_dir: str = ".") -> list[Feature]:
    """The nodes in install order (see the module's docstring)."""
    work = list(nodes)
    n = len(override or [])
    for i, uid in enumerate(override or []):
        ref = parse_reference(uid, config_dir)
        for node in work:
            if _soft_match(node, ref):
                node.round_priority = max(node.round_priority, n - i)
    for node in work:
        node.installs_after = [d for d in node.installs_after if any(_soft_match(m, d) for m in work)]
    done: list[Feature] = []
    while work:
        ready = [m for m in work
                 if all(any(_equals(d, x) for x in done) for d in m.depends_on)
                 and all(any(_soft_match(x, s) for x in done) for s in m.installs_after)]
        if not ready:
            names = ", ".join(m.user_id for m in work)
            raise InvalidConfiguration(f"features depend on each other in a cycle: {names}",
                                       hint="remove one of the dependsOn/installsAfter edges between them, "
                                            "or set overrideFeatureInstallOrder")
        top = max(m.round_priority for m in ready)
        ready = [m for m in ready if m.round_priority == top]
        work = [m for m in work if not any(_equals(r, m) for r in ready)]
        ready.sort(key=functools.cmp_to_key(compare))
        done.extend(ready)
    return done


def ordered_features(config: Mapping[str, Any], config_dir: str,
                     resolve: Callable[[FeatureRef], Resolved]) -> list[Feature]:
    """A configuration's ``features`` resolved and put in install order."""
    features = config.get("features") or {}
    if not features:
        return []
    nodes = resolve_graph(features, config_dir, resolve)
    return install_order(nodes, list(config.get("overrideFeatureInstallOrder") or []), config_dir)
