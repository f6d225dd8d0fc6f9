"""Leases: what an operation in progress holds so garbage collection leaves it alone."""
