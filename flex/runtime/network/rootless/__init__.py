"""Rootless networking: the outer namespace holding the guard, its rtnetlink links, and slirp4netns."""
