"""HTTP routes of /api/v1, one module per resource; deps.py holds what they share."""
