"""The WebSocket protocol (docs/protocol.md): endpoint, connection, actions."""
