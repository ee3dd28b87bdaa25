"""Exporters: where snapshots leave otelsnap.

- ``master`` (``master.py``): the AtlHyper Master, through a bounded
  on-disk queue (``queue.py``) with retries (``http_client.py``).
- ``file`` and ``stdout`` (``file.py``): JSON Lines for local runs, taps and
  tests.
"""
