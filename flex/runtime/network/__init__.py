"""Container networking: the Networks interface containers call, the root runner's bridge, and rootless/."""
