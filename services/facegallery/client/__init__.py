"""Python clients for the served API: `HttpClient` and `GrpcClient` have the same methods,
return the same typed results (`facegallery.wire.schemas`) and raise the same
`FaceGalleryError` subclasses (`InvalidImage`, `PermissionDenied`, `Overloaded`, ...)."""

from facegallery.client.grpc import GrpcClient
from facegallery.client.http import HttpClient
from facegallery.client.images import ImageArg

__all__ = ["GrpcClient", "HttpClient", "ImageArg"]
