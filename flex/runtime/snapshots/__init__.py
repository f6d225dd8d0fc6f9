"""Snapshots: filesystem states with a parent (containerd's Snapshotter model). See base.py."""

from flex.runtime.snapshots.base import Cleaner, Directories, DirectorySnapshotter, Info, Kind, Snapshotter, Usage

__all__ = ["Cleaner", "Directories", "DirectorySnapshotter", "Info", "Kind", "Snapshotter", "Usage"]
