"""The OCI runtime: config.json generation, seccomp profiles, and the crun (or runc) driver."""
