"""The REST API (server side, secret key): /api/v1."""
