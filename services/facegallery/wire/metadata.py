"""The names the API's calls carry beside their messages, in HTTP headers and gRPC metadata
alike (the gateway reads them, the clients and Serve's proxy write them)."""

API_KEY_HEADER = "x-api-key"
"""The API key (or ``authorization: Bearer <key>``)."""
TIMEOUT_HEADER = "x-request-timeout"
"""Over HTTP, the call's deadline in seconds from now (gRPC has its own)."""
DEADLINE_METADATA = "facegallery-deadline"
"""A gRPC call's deadline, absolute (seconds since the epoch), as Serve's proxy forwards it."""
REASON_METADATA = "facegallery-reason"
"""An error's stable reason (``not_found``, ``overloaded``, ...), in gRPC trailing metadata."""
RETRY_AFTER = "retry-after"
"""Seconds to wait before retrying a refused call (HTTP header, gRPC trailing metadata)."""
