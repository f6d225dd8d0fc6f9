"""Garbage collection of images, content and snapshots: mark from names, leases and containers; sweep the rest."""
