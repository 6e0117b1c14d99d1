"""An environment's theme: the look of the SDK's content as named tokens (docs/clients.md).

The SDK sets each token as the CSS custom property `--stepstream-NAME` on its
content's shadow roots, so a value ends up inside a style sheet: each kind of
token accepts only its own small grammar (a colour, a length, a font list, an
integer), and nothing that could close a declaration or load anything (`;`,
`}`, `<`, `url(`, `\\`, quotes other than around one font name).
"""

import re
from typing import Any

from django.db import transaction

from stepstream.engine import audit
from stepstream.errors import Invalid
from stepstream.models import Environment

_HEX = r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"
_NUMBER = r"-?(?:\d{1,4}(?:\.\d{1,4})?|\.\d{1,4})%?"
_FUNCTION = (
    rf"(?:rgba?|hsla?)\(\s*{_NUMBER}(?:deg)?(?:\s*[,\s]\s*{_NUMBER}){{2}}"
    rf"(?:\s*[,/]\s*{_NUMBER})?\s*\)"
)
COLOUR = re.compile(rf"^(?:{_HEX}|{_FUNCTION}|[a-zA-Z]{{3,20}})$")
LENGTH = re.compile(r"^(?:0|\d{1,4}(?:\.\d{1,3})?(?:px|rem|em))$")
# a list of font names, bare words or one name in double quotes each
_FONT_NAME = r'(?:[A-Za-z0-9 \-]{1,60}|"[A-Za-z0-9 \-]{1,60}")'
FONT = re.compile(rf"^{_FONT_NAME}(?:\s*,\s*{_FONT_NAME})*$")
INTEGER = re.compile(r"^-?\d{1,10}$")

KINDS = {
    "colour": (
        COLOUR,
        "a colour: #rgb, #rrggbb, #rrggbbaa, rgb(), rgba(), hsl(), hsla() or a name",
    ),
    "length": (LENGTH, "a length in px, rem or em (for example 8px), or 0"),
    "font": (FONT, 'a list of font names, for example system-ui, "Segoe UI", sans-serif'),
    "integer": (INTEGER, "an integer"),
}

# name: (kind, default); the SDK's docs list them (docs/clients.md, "Theme")
TOKENS: dict[str, tuple[str, str]] = {
    "color-primary": ("colour", "#2563eb"),
    "color-on-primary": ("colour", "#ffffff"),
    "color-background": ("colour", "#ffffff"),
    "color-text": ("colour", "#111827"),
    "color-muted": ("colour", "#6b7280"),
    "color-border": ("colour", "#e5e7eb"),
    "color-link": ("colour", "#2563eb"),
    "color-backdrop": ("colour", "rgba(17, 24, 39, 0.5)"),
    "color-hotspot": ("colour", "#2563eb"),
    "font-family": ("font", 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'),
    "font-size": ("length", "15px"),
    "radius": ("length", "8px"),
    "spacing": ("length", "16px"),
    "z-index": ("integer", "2147483000"),
}
MAX_VALUE = 200


def defaults() -> dict[str, str]:
    return {name: default for name, (_, default) in TOKENS.items()}


def describe(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The theme as answered: every token, the stored value or its default."""
    tokens = defaults()
    for name, value in (stored or {}).items():
        if name in tokens:
            tokens[name] = value
    return {"tokens": tokens}


def get(environment: Environment) -> dict[str, Any]:
    theme = Environment.objects.filter(pk=environment.pk).values_list("theme", flat=True).first()
    return describe(theme)


def validate(body: object) -> dict[str, str]:
    """The tokens of a `PUT /theme` body, every problem named."""
    if not isinstance(body, dict) or not isinstance(body.get("tokens"), dict):
        raise Invalid('The body must be {"tokens": {NAME: VALUE, ...}} (GET /theme lists them).')
    problems = []
    tokens: dict[str, str] = {}
    for name, value in body["tokens"].items():
        where = f"tokens.{str(name)[:60]}"
        if name not in TOKENS:
            problems.append(f"{where}: is not a theme token (tokens: {', '.join(TOKENS)}).")
            continue
        kind = TOKENS[name][0]
        pattern, sentence = KINDS[kind]
        if isinstance(value, int) and not isinstance(value, bool) and kind == "integer":
            value = str(value)
        if not isinstance(value, str) or len(value) > MAX_VALUE or not pattern.match(value.strip()):
            problems.append(f"{where}: must be {sentence}.")
            continue
        tokens[name] = value.strip()
    if problems:
        raise Invalid(*problems)
    return tokens


def put(environment: Environment, body: object, actor: str = "cli") -> dict[str, Any]:
    """Replaces the environment's tokens (a token not given is back to its default), with
    its audit entry in the same transaction."""
    tokens = validate(body)
    with transaction.atomic():
        Environment.objects.filter(pk=environment.pk).update(theme=tokens)
        audit.record(environment.pk, actor, "theme", "theme", {"tokens": tokens})
    environment.theme = tokens
    return describe(tokens)
