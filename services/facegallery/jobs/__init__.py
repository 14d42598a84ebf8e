"""Asynchronous enrollment: the queue on Redis Streams and the worker loop."""

from facegallery.jobs.queue import Delivery, EnrollmentQueue, Job, QueueDepth

__all__ = ["Delivery", "EnrollmentQueue", "Job", "QueueDepth"]
