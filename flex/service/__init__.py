"""A small service supervisor for machines where systemd is not PID 1 (containers, WSL, Firecracker VMs).

Owns: service definitions (``FLEX_ETC/services/NAME.json``), one supervising process per service that restarts
its command on a crash with backoff, pid and state files under ``FLEX_RUN``, logs under ``FLEX_LOG``.
Imports nothing from flex but flex.errors and flex.atomic: it must start fast and never pull in the control
plane, the runner or the runtime (an import-linter contract holds it to that).
"""

from flex.service.control import ServiceStatus, logs_path, service_status, start_service, stop_service
from flex.service.paths import ServicePaths
from flex.service.unit import Unit, load_unit, remove_unit, save_unit, unit_names

__all__ = [
    "ServicePaths",
    "ServiceStatus",
    "Unit",
    "load_unit",
    "logs_path",
    "remove_unit",
    "save_unit",
    "service_status",
    "start_service",
    "stop_service",
    "unit_names",
]
