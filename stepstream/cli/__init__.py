"""The `stepstream` command line (`main.py`); `setup.py` starts Django for every command."""

from stepstream.cli.main import main

__all__ = ["main"]
