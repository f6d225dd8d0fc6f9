"""The runner's SSH server (issue 15): asyncssh over tunnel streams, with no listening port; sessions run in the
environment's container as `flex exec` runs commands. docs/access.md, "SSH"."""

from flex.runner.access.ssh.hostkey import host_key, host_key_path
from flex.runner.access.ssh.service import SSHService

__all__ = ["SSHService", "host_key", "host_key_path"]
