"""Python clients for facegallery: `HttpClient` and `GrpcClient` call a running service, and
both implement `FaceGalleryClient` (as does ``serving.local_client.LocalClient``, in process):
the same methods, the same typed results (``facegallery.wire.schemas``) and the same
`FaceGalleryError` subclasses (`InvalidImage`, `PermissionDenied`, `Overloaded`, ...).
Importing it loads nothing of the server (tests/test_layering.py)."""

from facegallery.client.grpc import GrpcClient
from facegallery.client.http import HttpClient
from facegallery.client.images import ImageArg
from facegallery.client.protocol import FaceGalleryClient
from facegallery.core.errors import InvalidInput

__all__ = ["FaceGalleryClient", "GrpcClient", "HttpClient", "ImageArg", "connect"]


def connect(url: str, api_key: str | None = None) -> HttpClient | GrpcClient:
    """The client a URL's scheme asks for: http(s)://host:port or grpc://host:port."""
    if url.startswith(("http://", "https://")):
        return HttpClient(url, api_key)
    if url.startswith("grpc://"):
        return GrpcClient(url.removeprefix("grpc://"), api_key)
    raise InvalidInput(f"--url {url!r}: use http://host:port or grpc://host:port")
