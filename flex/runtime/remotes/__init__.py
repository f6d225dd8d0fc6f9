"""Registries: the OCI distribution client over httpx, and the credentials and challenges it answers."""
