"""Dockerfile parsing: directives, logical lines, flags, JSON and shell forms, heredocs."""
