"""What every command of the `facegallery` command line shares: the common options, errors as
one line with an exit status, and the output helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from facegallery.core.config import Settings, load_settings
from facegallery.core.errors import FaceGalleryError, InvalidInput

if TYPE_CHECKING:
    from facegallery.jobs import EnrollmentQueue
    from facegallery.service.face_service import FaceService

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


def person_folders(folder: Path) -> list[Path]:
    """The sub-folders of a folder-per-person tree (each named by its user id)."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    if not people:
        raise InvalidInput(f"{folder} has no sub-folders (one per person)")
    return people


def report_folder(summary: dict[str, Any], as_json: bool) -> None:
    """An enroll-folder summary (embedded or through the service): counts, the people
    refused, then every rejected photo and why."""
    if as_json:
        emit_json(summary, None)
        return
    typer.echo(
        f"{summary['users_enrolled']} user(s), {summary['images_enrolled']} photo(s) enrolled "
        f"in {summary['gallery']}; {summary['images_rejected']} photo(s) rejected"
    )
    for entry in summary["users_refused"]:
        typer.echo(f"  {entry['user_id']}: refused: {entry['reason']}")
    for outcome in summary["rejected"]:
        echo_outcome(outcome)


def read_image(path: Path) -> bytes:
    """A photo's bytes, or a clear error when the path is not a file."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    return path.read_bytes()


def report_enrollment(
    enrolled: int, images: int, user: str, gallery: str, templates: int, prefix: str = ""
) -> None:
    """The first line of an enrollment's summary (embedded, queued or through the service)."""
    typer.echo(
        f"{prefix}enrolled {enrolled} of {images} image(s) for {user} in {gallery} "
        f"({templates} template(s) kept)"
    )


def service_for(config: Path | None) -> FaceService:
    """The in-process use case on these settings (models loaded, gallery opened)."""
    from facegallery.service.face_service import FaceService

    return FaceService.from_settings(load_settings(config))


def queue_for(config: Path | None, settings: Settings | None = None) -> EnrollmentQueue:
    """The enrollment queue these settings name."""
    from facegallery.jobs import EnrollmentQueue

    settings = settings or load_settings(config)
    return EnrollmentQueue(settings.queue, settings.decode)
