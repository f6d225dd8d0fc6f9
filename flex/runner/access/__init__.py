"""How people reach this runner's environments (issue 15): the tunnel to the control plane and the
streams served on it. Imports runtime (through flex.runner.machine), api and client; never controlplane."""

from flex.runner.access.exec import ExecService, Target
from flex.runner.access.logs import SOURCES, LogService, log_path
from flex.runner.access.ports import PortService, connect_in_container
from flex.runner.access.tunnel import Handler, TunnelClient, tunnel_url

__all__ = ["SOURCES", "ExecService", "Handler", "LogService", "PortService", "Target", "TunnelClient",
           "connect_in_container", "log_path", "tunnel_url"]
