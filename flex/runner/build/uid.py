"""updateRemoteUserUID, as the reference CLI does it for `up` on Linux: one more layer that gives remoteUser
the uid/gid the workspace's owner has inside the container, and chowns its home, so files the user makes in
the bind-mounted folder are theirs on both sides. Skipped, as the reference skips it, when the merged
configuration says ``"updateRemoteUserUID": false``; when the user is root or numeric; when the user is not
in /etc/passwd, already has those ids, or another user holds the uid (a gid another group holds keeps the
user's own gid). Skipped here without a build, too, for uid 0: it is always root's.

The ids are the owner's *inside* the container, which the runner knows and the host's `id -u` is not:
rootless, flex maps the runner's user to the container's root, so a folder of that user is root's inside
(uid 0: nothing to do, and a non-root remoteUser reads it as root's files); the layer matters when the
workspace's owner is some other uid inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["UID_DOCKERFILE", "uid_update_user", "uid_update_wanted"]

# Written for flex from the rules above: /etc/passwd and /etc/group edited with awk (in every Debian and
# Alpine base), the home chowned; the image's USER put back.
UID_DOCKERFILE = """\
ARG BASE_IMAGE
FROM $BASE_IMAGE
USER root
ARG REMOTE_USER
ARG NEW_UID
ARG NEW_GID
RUN set -e; \\
    line=$(grep "^$REMOTE_USER:" /etc/passwd || true); \\
    if [ -z "$line" ]; then echo "updateRemoteUserUID: no user $REMOTE_USER"; exit 0; fi; \\
    old_uid=$(echo "$line" | cut -d: -f3); old_gid=$(echo "$line" | cut -d: -f4); \\
    home=$(echo "$line" | cut -d: -f6); \\
    if [ "$old_uid" = "$NEW_UID" ] && [ "$old_gid" = "$NEW_GID" ]; then exit 0; fi; \\
    if [ "$old_uid" != "$NEW_UID" ] && cut -d: -f3 /etc/passwd | grep -qx "$NEW_UID"; then \\
      echo "updateRemoteUserUID: uid $NEW_UID is taken; $REMOTE_USER keeps $old_uid"; exit 0; fi; \\
    gid=$NEW_GID; \\
    if [ "$old_gid" != "$NEW_GID" ] && cut -d: -f3 /etc/group | grep -qx "$NEW_GID"; then gid=$old_gid; fi; \\
    awk -F: -v OFS=: -v u="$REMOTE_USER" -v uid="$NEW_UID" -v gid="$gid" \\
      '$1 == u { $3 = uid; $4 = gid } { print }' /etc/passwd > /etc/passwd.flex; \\
    cat /etc/passwd.flex > /etc/passwd; rm /etc/passwd.flex; \\
    if [ "$gid" != "$old_gid" ]; then \\
      awk -F: -v OFS=: -v o="$old_gid" -v g="$gid" '$3 == o { $3 = g } { print }' /etc/group > /etc/group.flex; \\
      cat /etc/group.flex > /etc/group; rm /etc/group.flex; fi; \\
    if [ -d "$home" ] && [ "$home" != / ]; then chown -R "$NEW_UID:$gid" "$home"; fi; \\
    echo "updateRemoteUserUID: $REMOTE_USER is now $NEW_UID:$gid"
ARG IMAGE_USER=root
USER $IMAGE_USER
"""


def uid_update_wanted(merged: dict[str, Any]) -> bool:
    """The merged ``updateRemoteUserUID`` (last wins; the reference's default is on)."""
    return merged.get("updateRemoteUserUID") is not False


def uid_update_user(entries: Sequence[dict[str, Any]], image_user: str | None) -> str | None:
    """The user whose ids would change (the reference's: remoteUser, containerUser, the image's USER, root),
    or None when it is root or numeric."""
    user = next((e["remoteUser"] for e in reversed(entries) if e.get("remoteUser")), None) \
        or next((e["containerUser"] for e in reversed(entries) if e.get("containerUser")), None) \
        or image_user or "root"
    name = str(user).split(":", 1)[0]
    return None if name == "root" or name.isdigit() else name
