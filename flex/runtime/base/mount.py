"""A mount as the snapshotter hands it to whoever builds a container's root filesystem.

Like containerd's ``mount.Mount``: a description, never performed here. Imports nothing from flex.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Mount"]


@dataclass(frozen=True)
class Mount:
    """``mount -t {type} -o {','.join(options)} {source} {target}``; ``target`` is relative to where the
    caller mounts the snapshot ("" = the mount point itself)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = field(default_factory=tuple)

    def option(self, name: str) -> str | None:
        """The value of ``name=value`` in ``options`` (``""`` for a bare flag), or None."""
        for opt in self.options:
            key, sep, value = opt.partition("=")
            if key == name:
                return value if sep else ""
        return None
