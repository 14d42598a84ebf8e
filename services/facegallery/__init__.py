"""facegallery: face gallery search and enrollment."""

__version__ = "0.1.0"
