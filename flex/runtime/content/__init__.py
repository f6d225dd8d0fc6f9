"""The content store: immutable blobs by digest, and blobs readable while they download."""
