"""The ``facegallery`` command. Thin: it parses, calls the library, prints.

Errors from the library are printed as one line on stderr with a non-zero exit status (2 for
bad input, 1 otherwise); JSON goes to stdout, progress bars to stderr.
"""

from __future__ import annotations

import typer

from facegallery.cli import gallery, lab, ops
from facegallery.cli.client import client_app

app = typer.Typer(
    help="Face gallery search and enrollment: enroll, identify, verify, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(gallery.app)
app.add_typer(ops.app)
app.add_typer(lab.app)
app.add_typer(client_app, name="client")
