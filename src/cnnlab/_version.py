"""The package version, on the ground floor: nothing to import."""

__version__ = "0.1.0"
