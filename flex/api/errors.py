"""Error kinds of the API that flex/errors.py does not have. No I/O."""

from __future__ import annotations

from flex.errors import Conflict

__all__ = ["Gone"]


class Gone(Conflict):
    """HTTP 410: a watch asked for a resourceVersion older than the event log keeps; list again, then watch."""

    kind = "Gone"
    http_status = 410
