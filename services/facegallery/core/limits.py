"""The API's hard limits, which the settings tree and the wire schemas both check (so they
live below both): the most images one call may carry, and the highest target FPIR an
operating point may be asked for."""

IMAGES_PER_CALL_MAX = 100
"""The most images any one call carries (the API schemas' list bound; the settings below it)."""
MAX_FPIR = 0.1
"""Targets above this are not a useful "unknown" (and a stored calibration answers up to it)."""
