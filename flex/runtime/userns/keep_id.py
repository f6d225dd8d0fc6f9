"""``--userns keep-id[:uid=U,gid=G]`` for rootless containers (podman's syntax and idea): the user's own id is
U inside, so files the user owns on the host (a bind-mounted folder) belong to U in the container, and what U
makes there belongs to the user outside.

Rootless containers run in the keeper's user namespace (keeper.py: 0 = the user, 1..N = the subuids), where
crun is root over all N+1 ids. A keep-id container gets a nested map onto those keeper ids:

    container 0..U-1  -> keeper 1..U      (the first subuids)
    container U       -> keeper 0         (the user)
    container U+1..N  -> keeper U+1..N    (the rest, unchanged)

and the same for gids with G. Image layers are stored for the plain map (keeper id = container id), so a
keep-id container needs them with owners moved through ``keeper_id``: shift.py copies them once.
Imports nothing from flex but flex.errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from flex.errors import InvalidArgument
from flex.runtime.userns.idmap import IdMap

__all__ = ["KeepId", "parse_userns"]

_SPEC = re.compile(r"keep-id(?::(.*))?")
_HINT = "flex knows --userns keep-id and --userns keep-id:uid=U,gid=G (rootless containers only)"


@dataclass(frozen=True)
class KeepId:
    uid: int
    gid: int

    @property
    def tag(self) -> str:
        """Names the shifted copy of a layer made for this map (the cache key beside the layer)."""
        return f"keep-id-{self.uid}-{self.gid}"

    def to_option(self) -> str:
        return f"keep-id:uid={self.uid},gid={self.gid}"

    def inner(self, keeper: IdMap) -> IdMap:
        """The container's map onto the keeper's ids (the OCI uidMappings crun writes inside the keeper)."""
        nu, ng = _size(keeper.uids), _size(keeper.gids)
        for what, value, n in (("uid", self.uid, nu), ("gid", self.gid, ng)):
            if not 0 <= value < n:
                raise InvalidArgument(f"--userns keep-id:{what}={value}: a rootless container's {what}s are 0..{n - 1}",
                                      hint=f"give keep-id:uid=U,gid=G with U and G below {n}")
        return IdMap(uids=_rows(self.uid, nu), gids=_rows(self.gid, ng))

    def host(self, keeper: IdMap) -> IdMap:
        """The container's map onto host ids (what `inspect` shows): ``inner`` followed by the keeper's map."""
        inner = self.inner(keeper)
        return IdMap(uids=_compose(inner.uids, keeper.uids), gids=_compose(inner.gids, keeper.gids))


def _size(rows: tuple[tuple[int, int, int], ...]) -> int:
    return max(a + n for a, _, n in rows)


def _rows(u: int, n: int) -> tuple[tuple[int, int, int], ...]:
    rows = [(0, 1, u), (u, 0, 1), (u + 1, u + 1, n - u - 1)]
    return tuple(r for r in rows if r[2] > 0)


def _compose(inner: tuple[tuple[int, int, int], ...],
             outer: tuple[tuple[int, int, int], ...]) -> tuple[tuple[int, int, int], ...]:
    """Each inner row lies inside one outer row (the kernel asks the same of a nested map)."""
    out = []
    for a, b, n in inner:
        for oa, ob, on in outer:
            if oa <= b and b + n <= oa + on:
                out.append((a, ob + b - oa, n))
                break
        else:
            raise InvalidArgument(f"id range {b}..{b + n - 1} is not inside one range of the user namespace")
    return tuple(out)


def parse_userns(value: str | None) -> KeepId | None:
    """``--userns``: None or "" is the default map; ``keep-id`` maps the caller's own uid and gid; ``keep-id:uid=U,
    gid=G`` (either may be left out: the caller's) maps them to U and G."""
    if not value:
        return None
    m = _SPEC.fullmatch(value)
    if m is None:
        raise InvalidArgument(f"--userns {value!r}: not a user namespace mode flex knows", hint=_HINT)
    ids = {"uid": os.getuid(), "gid": os.getgid()}
    for item in (m.group(1) or "").split(",") if m.group(1) is not None else []:
        key, sep, num = item.partition("=")
        if key not in ids or not sep or not num.isdigit():
            raise InvalidArgument(f"--userns {value!r}: {item!r} is not uid=N or gid=N", hint=_HINT)
        ids[key] = int(num)
    return KeepId(uid=ids["uid"], gid=ids["gid"])
