"""``python -m facegallery``: the command line (how the stack launches its own servers)."""

from facegallery.cli import app

app()
