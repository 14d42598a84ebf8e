"""Files taken out of pinned registry packages: model weights and sample photos."""
