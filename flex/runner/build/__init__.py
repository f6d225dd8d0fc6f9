"""Building a devcontainer's image on a runner (and for `flex build`): features fetched (fetch.py) and the
base image or user Dockerfile plus the features built through the runtime's builder (image.py)."""
