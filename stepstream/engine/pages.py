"""Pages: where a person's browser is (the WebSocket action `page`), as conditions read it.

Only the latest page is kept (one row per person). Conditions see it as the
variable `page`: {"url", "path", "query": {name: value}}, `path` as written
in the URL, a repeated query name keeping its last value; absent before any.
"""

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stepstream.engine import conditioncost
from stepstream.errors import Invalid
from stepstream.models import PersonPage

MAX_URL = conditioncost.MAX_PAGE_URL  # characters: longer URLs are refused (400)


def check_url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("data.url is required: the page's URL, a non-empty string.")
    if len(value) > MAX_URL:
        raise Invalid(f"data.url is longer than {MAX_URL} characters: send a shorter URL.")
    if any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in value):  # C0, DEL, C1
        raise Invalid("data.url must not contain control characters.")
    try:  # conditions read it split: one that does not split (a broken [IPv6] host) is refused
        urlsplit(value)
    except ValueError as e:
        raise Invalid(f"data.url cannot be read as a URL ({e}): send location.href.") from None
    return value


def variable(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return {"url": url, "path": parts.path, "query": query}


def read(person_id: int) -> dict[str, Any] | None:
    found = PersonPage.objects.filter(person_id=person_id).values_list("url", flat=True).first()
    return None if found is None else variable(found)


def write(person_id: int, url: str) -> bool:
    """Stores the person's latest page; True when it differs from the one stored."""
    updated = PersonPage.objects.filter(person_id=person_id).exclude(url=url).update(url=url)
    if updated:
        return True
    _, created = PersonPage.objects.get_or_create(person_id=person_id, defaults={"url": url})
    return created
