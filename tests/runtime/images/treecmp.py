"""Compare two directory trees the way a user of the container would see them."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def describe(root: Path, *, mtimes: bool = True) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            entry: dict[str, Any] = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1:
                    entry["link_group"] = inodes.setdefault(key, rel)
                if mtimes:
                    entry["mtime"] = st.st_mtime_ns
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
                if mtimes:
                    entry["mtime"] = st.st_mtime_ns
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {}
                for x in os.listxattr(path, follow_symlinks=False):
                    if ".overlay." in f".{x}":
                        continue
                    xattrs[x] = os.getxattr(path, x, follow_symlinks=False).hex()
                if xattrs:
                    entry["xattrs"] = xattrs
            out[rel] = entry
    return out


def diff(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            problems.append(f"only in second: {key}")
        elif key not in b:
            problems.append(f"only in first: {key}")
        elif a[key] != b[key]:
            problems.append(f"{key}: {a[key]} != {b[key]}")
    return problems
