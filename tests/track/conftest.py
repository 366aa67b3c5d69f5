"""Fixtures of the tracking tests (definitions in track_data.py, importable by the test modules)."""

from track_data import fitted, ipd_frame, store, summary  # noqa: F401
