"""Address management for the root runner's bridge network, recorded in the runtime database.

Owns the ``net_leases`` and ``net_ipam_cursor`` tables. A lease is taken inside one write transaction
(BEGIN IMMEDIATE), so two processes never get the same address; it lives in the database, so it survives
restarts and crashes until ``release`` (or the network GC) drops it. Addresses are handed out round-robin
from a cursor rather than lowest-first, so an address just released is not reused at once while a peer
may still hold it in its ARP cache. Imports nothing from flex but flex.errors and the metadata DB.
"""

from __future__ import annotations

import ipaddress
import time

from flex.errors import Unavailable
from flex.runtime.base.metadata import MetadataDB

__all__ = ["IPAM", "SCHEMA"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS net_leases (
        subnet TEXT NOT NULL,
        address TEXT NOT NULL,
        container_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (subnet, address),
        UNIQUE (subnet, container_id)
    )""",
    "CREATE TABLE IF NOT EXISTS net_ipam_cursor (subnet TEXT PRIMARY KEY, last INTEGER NOT NULL)",
]


class IPAM:
    """Leases in one IPv4 subnet; the first host address is the gateway (the bridge)."""

    def __init__(self, db: MetadataDB, subnet: str):
        self.db = db
        self.network = ipaddress.IPv4Network(subnet)
        if self.network.num_addresses < 8:
            raise ValueError(f"subnet {subnet} is too small")
        self.subnet = str(self.network)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 1

    def lease(self, container_id: str) -> str:
        """The container's address: its existing lease, or a new one. Raises Unavailable when full."""
        first = int(self.network.network_address) + 2          # .0 network, .1 gateway
        last = int(self.network.broadcast_address) - 1
        with self.db.transaction() as conn:
            row = conn.execute("SELECT address FROM net_leases WHERE subnet = ? AND container_id = ?",
                               (self.subnet, container_id)).fetchone()
            if row is not None:
                return str(row["address"])
            taken = {int(ipaddress.IPv4Address(r["address"])) for r in conn.execute(
                "SELECT address FROM net_leases WHERE subnet = ?", (self.subnet,))}
            cur = conn.execute("SELECT last FROM net_ipam_cursor WHERE subnet = ?", (self.subnet,)).fetchone()
            start = int(cur["last"]) + 1 if cur is not None else first
            size = last - first + 1
            for i in range(size):
                candidate = first + (start - first + i) % size
                if candidate not in taken:
                    break
            else:
                raise Unavailable(f"no free address left in {self.subnet} ({size} containers hold them all)",
                                  hint="remove stopped containers, or configure a larger subnet")
            address = str(ipaddress.IPv4Address(candidate))
            conn.execute("INSERT INTO net_leases (subnet, address, container_id, created_at) VALUES (?, ?, ?, ?)",
                         (self.subnet, address, container_id, time.time()))
            conn.execute("INSERT INTO net_ipam_cursor (subnet, last) VALUES (?, ?) "
                         "ON CONFLICT(subnet) DO UPDATE SET last = excluded.last", (self.subnet, candidate))
            return address

    def release(self, container_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM net_leases WHERE subnet = ? AND container_id = ?", (self.subnet, container_id))

    def leases(self) -> dict[str, str]:
        """container id -> address, for every lease in this subnet."""
        rows = self.db.query("SELECT container_id, address FROM net_leases WHERE subnet = ?", (self.subnet,))
        return {str(r["container_id"]): str(r["address"]) for r in rows}
