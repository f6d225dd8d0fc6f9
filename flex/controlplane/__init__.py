"""The control plane: desired state, REST API, watches, scheduling, auth, UI. Never imports runtime or runner."""
