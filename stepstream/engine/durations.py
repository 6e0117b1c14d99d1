"""Durations as flows and limits write them: "Ns", "Nm", "Nh" or "Nd" (docs/rules.md).

N is a positive integer without sign or leading zeros; the longest duration
is MAX_DURATION (365 days), which bounds how long a timer or a limit's
window keeps a row, and how far back a limit looks.
"""

import re

from stepstream.errors import Invalid

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 365 * 86400
MAX_TEXT = "365d"
_FORM = re.compile(r"[1-9][0-9]{0,8}[smhd]")


def parse(value: object, where: str) -> int:
    """Seconds of a duration; a 400 naming `where` and the form otherwise."""
    if not isinstance(value, str) or not _FORM.fullmatch(value):
        raise Invalid(
            f"{where} must be a duration: a positive whole number and a unit, "
            f'"30s", "10m", "2h" or "7d" (at most {MAX_TEXT}).'
        )
    seconds = int(value[:-1]) * UNITS[value[-1]]
    if seconds > MAX_DURATION:
        raise Invalid(f"{where} is longer than {MAX_TEXT}, the longest duration.")
    return seconds
