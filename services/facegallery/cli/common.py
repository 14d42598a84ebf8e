"""What every command of the `facegallery` command line shares: the common options, errors as
one line with an exit status, and the output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from facegallery.core.errors import FaceGalleryError, InvalidInput

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML settings file (FACEGALLERY_* variables override it)."),
]
GalleryOption = Annotated[str, typer.Option("--gallery", "-g", help="Gallery id.")]
UserOption = Annotated[str, typer.Option("--user", "-u", help="User id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ThresholdOption = Annotated[
    float | None,
    typer.Option("--threshold", help="Cosine threshold for this request (default: calibrated)."),
]
FpirOption = Annotated[
    float | None,
    typer.Option(
        "--fpir", help="Target false positive identification rate (default: the gallery's)."
    ),
]
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
        except ModuleNotFoundError as exc:  # the client alone: no server install here
            typer.echo(
                f"error: this needs the server install ({exc.name} is missing): "
                "pip install 'facegallery[server]', or call a service with --url",
                err=True,
            )
            raise typer.Exit(1) from None
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


def person_folders(folder: Path) -> list[Path]:
    """The sub-folders of a folder-per-person tree (each named by its user id)."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    if not people:
        raise InvalidInput(f"{folder} has no sub-folders (one per person)")
    return people


def read_image(path: Path) -> bytes:
    """A photo's bytes, or a clear error when the path is not a file."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    return path.read_bytes()
