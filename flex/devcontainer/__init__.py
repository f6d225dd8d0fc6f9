"""Pure devcontainer spec logic: reading JSONC, the schema, variable substitution, defaults, features.

Imports nothing from flex but flex.errors; no container engine here.
"""
