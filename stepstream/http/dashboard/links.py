"""Links to a person's page and a flow's page, right for every key and identifier.

A key is one percent-encoded path segment (`convertors.link_segment`): `a/b` is
`people/a%2Fb/`, `50%` is `people/50%25/`, `a?b#c` is `people/a%3Fb%23c/`, and the
routes' `<seg:…>` converter gives it back. Django's `{% url %}` cannot make these
(it encodes the "%" of %2F once more), so the pages take their links from here.
"." and ".." are the exception: no browser keeps them as a path segment, so their
links are `person/?key=..` and `flow/?flow=..`, routes that take any key.
"""

from urllib.parse import urlencode

from django.urls import reverse

from stepstream.http.convertors import link_segment


def person(env_id: int, key: str) -> str:
    segment = link_segment(key)
    if segment is None:
        return reverse("dashboard:person_by_query", args=[env_id]) + "?" + urlencode({"key": key})
    return f"{reverse('dashboard:people', args=[env_id])}{segment}/"


def flow(env_id: int, identifier: str, version: int | None = None) -> str:
    segment = link_segment(identifier)
    query: dict[str, str | int] = {"version": version} if version is not None else {}
    if segment is None:
        query = {"flow": identifier, **query}
        return reverse("dashboard:flow_by_query", args=[env_id]) + "?" + urlencode(query)
    url = f"{reverse('dashboard:flows', args=[env_id])}{segment}/"
    return f"{url}?{urlencode(query)}" if query else url
