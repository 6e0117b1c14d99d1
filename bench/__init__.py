"""Benchmarks, run by hand (docs/performance.md); not part of the test suite."""
