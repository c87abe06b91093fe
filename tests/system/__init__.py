"""Honk as processes: the `honk` CLI in subprocesses, several workers on PostgreSQL, a
worker killed or a database stopped mid-run. Marked `slow` (see conftest.py here):
`pytest -m "not slow"` runs the other tiers."""
