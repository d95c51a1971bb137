"""Benchmarks of the provider (``make bench``); see docs/benchmarks.md. Not part of ``make test``."""
