"""Servers the project runs itself, all under one supervisor pattern (``supervisor.py``)."""

from facegallery.servers.milvus import MilvusServer
from facegallery.servers.supervisor import ManagedServer, ServerStatus

__all__ = ["ManagedServer", "MilvusServer", "ServerStatus"]
