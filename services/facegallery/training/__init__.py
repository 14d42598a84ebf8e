"""Metric learning for face embeddings: losses, aligned datasets, a compact backbone, the
`facegallery train` loop and export to the pipeline (needs the ``train`` extra: torch)."""
