"""Snapshots: filesystem states with a parent (containerd's Snapshotter model). See base.py."""

from flex.runtime.snapshots.base import Info, Kind, Snapshotter, Usage

__all__ = ["Info", "Kind", "Snapshotter", "Usage"]
