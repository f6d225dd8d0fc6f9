"""Tasks: a created container's running process tree, attached or detached, exec, and terminals."""
