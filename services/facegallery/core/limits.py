"""What the API accepts, which the settings tree, the wire schemas, the decoder and the
clients all check (so it lives below them all): the most images one call may carry, the
highest target FPIR an operating point may be asked for, and the image files it reads."""

IMAGES_PER_CALL_MAX = 100
"""The most images any one call carries (the API schemas' list bound; the settings below it)."""
MAX_FPIR = 0.1
"""Targets above this are not a useful "unknown" (and a stored calibration answers up to it)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
"""File names the decoder's formats come under (for walking folders of photos)."""
