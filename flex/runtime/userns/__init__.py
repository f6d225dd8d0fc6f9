"""User namespaces: id maps, the root runner's machine-wide id pool, and the rootless keeper namespace."""
