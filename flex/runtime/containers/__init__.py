"""Containers: records, bundles and the resources each holds; creation; root filesystems; bind mounts."""
