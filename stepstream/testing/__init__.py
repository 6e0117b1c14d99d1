"""Helpers shared by the test suite and the benchmark: real `stepstream serve` processes
(`servers.py`) and the flows both use (`flows.py`). Needs the `test` extra (httpx)."""
