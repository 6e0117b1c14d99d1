"""Input text rules shared by REST and WebSocket: what every string must satisfy."""

from stepstream.errors import Invalid


def contains_nul(value) -> bool:
    """NUL cannot be stored in PostgreSQL text or JSON; refuse it everywhere alike."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def reject_nul(value, where: str) -> None:
    if contains_nul(value):
        raise Invalid(f"{where} must not contain NUL (\\u0000) characters.")
