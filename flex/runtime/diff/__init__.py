"""Applying layer diffs: an untrusted layer tar onto a snapshot directory, never outside it."""
