"""The gallery: enrolled people as sets of templates in Milvus, and the policy that keeps them."""

from facegallery.gallery.store import Candidate, Gallery, GalleryStats, NewTemplate, Template

__all__ = ["Candidate", "Gallery", "GalleryStats", "NewTemplate", "Template"]
