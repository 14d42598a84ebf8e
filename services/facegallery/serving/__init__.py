"""The served mode: the Ray Serve application (Gateway, Detector, Embedder, enrollment
workers), its API schemas and its one servicer layer."""
