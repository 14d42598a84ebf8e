"""The ``facegallery`` command, one for every audience: the gallery commands over a client
(``gallery``: in process, or a service by ``--url``), the demo, the operators' commands
(``ops``: servers, stack, keys, workers, models) and the research ones (``lab``: evaluation,
calibration, training). Thin: it parses, calls the library, prints.

Errors are printed as one line on stderr with a non-zero exit status (2 for bad input, 1
otherwise); JSON goes to stdout, progress bars to stderr.
"""

from __future__ import annotations

import typer

from facegallery.cli import demo, gallery, lab, ops

app = typer.Typer(
    help="Face gallery search and enrollment: enroll, identify, verify, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(demo.app)
app.add_typer(gallery.app)
app.add_typer(ops.app)
app.add_typer(lab.app)
