"""The runner's identity on this machine: FLEX_HOME/runner/credential.json (0600, written atomically).

`flex runner join` exchanges a single-use join token for a runner id and a credential and keeps them here;
`flex runner run` reads them. The file is a secret: only its owner may read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from flex.atomic import write_atomic
from flex.errors import FailedPrecondition, NotFound

__all__ = ["Credential", "credential_path", "load_credential", "runner_dir", "save_credential"]


@dataclass(frozen=True)
class Credential:
    url: str
    runner_id: str
    name: str
    kind: str
    credential: str


def runner_dir(home: Path) -> Path:
    """FLEX_HOME/runner/: searchable (a root runner's containers reach their volumes below it), not listable."""
    d = home / "runner"
    d.mkdir(parents=True, exist_ok=True, mode=0o711)
    return d


def credential_path(home: Path) -> Path:
    return home / "runner" / "credential.json"


def save_credential(home: Path, cred: Credential) -> Path:
    path = runner_dir(home) / "credential.json"
    write_atomic(path, json.dumps(asdict(cred), indent=2) + "\n", mode=0o600)
    return path


def load_credential(home: Path) -> Credential:
    path = credential_path(home)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if os.stat(path).st_mode & 0o077:
            raise FailedPrecondition(f"{path} is readable by others", hint=f"chmod 600 {path}")
        return Credential(**{k: str(data[k]) for k in ("url", "runner_id", "name", "kind", "credential")})
    except FileNotFoundError:
        raise NotFound(f"this machine has not joined a control plane ({path} does not exist)",
                       hint="flex runner join URL --token JOIN_TOKEN") from None
    except (ValueError, KeyError, TypeError) as err:
        raise FailedPrecondition(f"{path} is damaged: {err}",
                                 hint="join again: remove the file, then flex runner join URL --token T") from None
