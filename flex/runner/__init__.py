"""The runner: reconciles the environments assigned to one machine. Never imports flex.controlplane."""
