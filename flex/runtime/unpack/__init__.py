"""Unpack: an image's layers into committed snapshots, one per chain id (rootless: inside a user namespace)."""
