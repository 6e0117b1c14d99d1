"""The HTTP layer below Django: the connection protocol, request bodies, error bodies."""
