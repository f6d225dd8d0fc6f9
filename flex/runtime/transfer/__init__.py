"""Moving images in and out: pull and push against registries, OCI archives, and bootstrap from mmdebstrap."""
