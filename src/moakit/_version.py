"""The version of moakit, in one place (the package, the manifests and pyproject read it here)."""

__version__ = "0.1.0"
