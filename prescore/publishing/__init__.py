"""A new version's way to live.

The one ``lifecycle`` of a version, its data ``gates``, and publishing scores made elsewhere
from ``parquet``.
"""
