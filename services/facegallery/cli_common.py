"""What every command of the `facegallery` command line shares: the common options, errors as
one line with an exit status, and the output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from facegallery.errors import FaceGalleryError, InvalidInput

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file (FACEGALLERY_* variables override it)."),
]
GalleryOption = Annotated[str, typer.Option("--gallery", "-g", help="Gallery id.")]
UserOption = Annotated[str, typer.Option("--user", "-u", help="User id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn library errors into one clear line and an exit status instead of a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FaceGalleryError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2 if isinstance(exc, InvalidInput) else 1) from None
        except OSError as exc:  # unreadable files, full disks: the system's own words
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def emit_json(payload: object, out: Path | None) -> None:
    text = json.dumps(payload, indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")


def echo_outcome(outcome: dict[str, Any]) -> None:
    """One image's outcome (``EnrollOutcome.to_dict()``, from the service or a job)."""
    if outcome["status"] == "enrolled":
        for warning in outcome["warnings"]:
            typer.echo(f"  {outcome['image']}: enrolled, warning: {warning}")
        return
    typer.echo(f"  {outcome['image']}: rejected ({outcome['reason']}): {outcome['message']}")
