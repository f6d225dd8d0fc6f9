"""Wire contract shared by every layer: Environment {metadata, spec, status}, Runner, Condition. No I/O.

snake_case in Python, camelCase on the wire (``resourceVersion``, ``desiredPhase``, ``observedGeneration``),
as in Kubernetes and devcontainer.json. Serialize with ``model.to_wire()`` (aliases, no ``None`` noise).
"""

from flex.api.environments import (
    PHASES,
    Condition,
    DevcontainerRef,
    Environment,
    EnvironmentCreate,
    EnvironmentList,
    EnvironmentMetadata,
    EnvironmentSpec,
    EnvironmentStatus,
    ListMeta,
    Port,
    PortStatus,
    Resources,
    Source,
    WatchEvent,
    set_condition,
)
from flex.api.errors import Gone
from flex.api.runners import (
    JoinRequest,
    JoinResponse,
    JoinToken,
    Runner,
    RunnerCapacity,
    RunnerHeartbeat,
    RunnerList,
)
from flex.api.users import (
    AuditEvent,
    AuditEventList,
    Token,
    TokenCreate,
    TokenCreated,
    TokenList,
    User,
    UserCreate,
    UserCreated,
)
from flex.api.wire import WireModel, parse_quantity

__all__ = [
    "PHASES",
    "AuditEvent",
    "AuditEventList",
    "Condition",
    "DevcontainerRef",
    "Environment",
    "EnvironmentCreate",
    "EnvironmentList",
    "EnvironmentMetadata",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "Gone",
    "JoinRequest",
    "JoinResponse",
    "JoinToken",
    "ListMeta",
    "Port",
    "PortStatus",
    "Resources",
    "Runner",
    "RunnerCapacity",
    "RunnerHeartbeat",
    "RunnerList",
    "Source",
    "Token",
    "TokenCreate",
    "TokenCreated",
    "TokenList",
    "User",
    "UserCreate",
    "UserCreated",
    "WatchEvent",
    "WireModel",
    "parse_quantity",
    "set_condition",
]
