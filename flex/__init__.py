"""flex: declarative developer environments on rootless, user-namespaced runners."""

__version__ = "0.1.0"
__all__ = ["__version__"]
