"""Container cgroups (v1 and v2): placement, limits, counters, delegation."""
