"""Stepstream: flows and steps per person, with live state over WebSocket."""

__version__ = "0.1.0"
