"""The pipeline's stages as plain functions and small classes over numpy arrays.

Nothing here knows about serving, Redis or Milvus.
"""
