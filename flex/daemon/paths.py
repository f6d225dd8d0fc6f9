"""Where the daemon keeps its files: FLEX_HOME/daemon/ (0700), so its socket and secrets are the user's alone.

    daemon.sock     the API (0600)
    daemon.lock     held (flock) by the running daemon: a kill -9 releases it, so the next start just works
    state.json      pid, socket, loopback URL, runner id: written once the daemon serves and its runner joined
    daemon.log      the daemon's stdout and stderr
    server/         the embedded control plane's files (SQLite database, secret key, admin-token 0600)
    runner.json     the embedded runner's credential (0600)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DaemonPaths"]


@dataclass(frozen=True)
class DaemonPaths:
    home: Path

    @property
    def dir(self) -> Path:
        return self.home / "daemon"

    def ensure(self) -> DaemonPaths:
        from flex.errors import FailedPrecondition

        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir.chmod(0o700)
        except OSError as err:
            raise FailedPrecondition(f"cannot create the daemon's folder {self.dir}: {err.strerror}",
                                     hint="set FLEX_HOME to a folder of yours") from None
        return self

    @property
    def socket(self) -> Path:
        return self.dir / "daemon.sock"

    @property
    def url(self) -> str:
        return f"unix:{self.socket}"

    @property
    def lock(self) -> Path:
        return self.dir / "daemon.lock"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def log(self) -> Path:
        return self.dir / "daemon.log"

    @property
    def server_dir(self) -> Path:
        return self.dir / "server"

    @property
    def token_file(self) -> Path:
        return self.server_dir / "admin-token"

    @property
    def credential(self) -> Path:
        return self.dir / "runner.json"
