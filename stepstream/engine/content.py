"""A step's `content`: checked at publish, localized for `get_content` (docs/content.md).

Content is part of the flow version, so it never changes once published: the
localized answers are memoized per version and locale, like compiled graphs.
Validation names every problem by its path (`steps[3].content.buttons[0].transition`)
and refuses what the browser could not use safely: selectors the SDK could not
hand to `querySelector`, Markdown links to other schemes than http, https and
mailto (`javascript:` above all), texts without a translation.
"""

import re
from collections.abc import Callable
from typing import Any

import cssselect
import orjson
from django.conf import settings

from stepstream.bounded import BoundedMemo

TYPES = ("modal", "tooltip", "banner", "hotspot", "checklist")
NEEDS_TARGET = ("tooltip", "hotspot")
PLACEMENTS = ("top", "bottom", "left", "right", "auto")
STYLES = ("primary", "secondary", "link")
DISMISS = ("exit", "hide", "none")
DEFAULT_LOCALE = "default"

# Sizes (docs/content.md, "Limits"); the whole of a version's content is bounded
# by the setting STEPSTREAM_MAX_CONTENT_BYTES as well.
MAX_TITLE = 200
MAX_BODY = 5000
MAX_LABEL = 100
MAX_BUTTONS = 5
MAX_ITEMS = 50
MAX_LOCALES = 50
MAX_SELECTOR = 500
MAX_FALLBACKS = 5
MAX_TARGET_TEXT = 200
DEFAULT_WAIT_MS = 5000
MAX_WAIT_MS = 60000

CONTENT_KEYS = ("type", "title", "body", "target", "buttons", "dismiss", "items", "locales")
TARGET_KEYS = ("selector", "fallbacks", "text", "wait_ms", "placement")
BUTTON_KEYS = ("label", "transition", "action", "style")
ITEM_KEYS = ("label", "step")
LOCALE_KEYS = ("title", "body", "buttons", "items")

# BCP 47 language tags as browsers send them (RFC 5646's langtag, without
# extensions and private use): language, then script, region and variants
BCP47 = re.compile(
    r"^[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}(?:-[A-Za-z]{4})?"
    r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$"
)
# control characters other than tab and newline have no place in a text shown to people
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Markdown link destinations: inline links and images, reference definitions, autolinks
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"\]\(\s*(<[^>\n]*>|[^\s)]*)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*(<[^>\n]*>|\S+)", re.M)
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*)>")
_SAFE_LINK = re.compile(r"^(?:https?://|mailto:|/|#)", re.I)


# Selectors: what cssselect's grammar lets through but browsers refuse (checked on the
# text with its quoted strings blanked out): unknown pseudo-classes, An+B arguments
# that are not, namespace prefixes (no page declares one for querySelector)
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_PSEUDO = re.compile(r"(?<![\\:]):([A-Za-z-][\w-]*)(\()?")
_NTH = re.compile(r":nth-(?:last-)?(?:child|of-type)\(([^)]*)\)", re.I)
_AN_PLUS_B = re.compile(
    r"^\s*(?:odd|even|[+-]?\d*n(?:\s*[+-]\s*\d+)?|[+-]?\d+)(?:\s+of\s+\S.*)?\s*$", re.I
)
_NAMESPACE = re.compile(r"(?<![\w\\-])(?:[A-Za-z_][\w-]*)?\|(?![=|])")
PSEUDO_CLASSES = frozenset(
    [
        "active",
        "any-link",
        "autofill",
        "checked",
        "default",
        "defined",
        "disabled",
        "empty",
        "enabled",
        "first-child",
        "first-of-type",
        "focus",
        "focus-visible",
        "focus-within",
        "fullscreen",
        "hover",
        "in-range",
        "indeterminate",
        "invalid",
        "last-child",
        "last-of-type",
        "link",
        "modal",
        "only-child",
        "only-of-type",
        "open",
        "optional",
        "out-of-range",
        "paused",
        "placeholder-shown",
        "playing",
        "popover-open",
        "read-only",
        "read-write",
        "required",
        "root",
        "scope",
        "target",
        "user-invalid",
        "user-valid",
        "valid",
        "visited",
    ]
)
PSEUDO_FUNCTIONS = frozenset(
    [
        "not",
        "is",
        "where",
        "has",
        "nth-child",
        "nth-last-child",
        "nth-of-type",
        "nth-last-of-type",
        "lang",
        "dir",
    ]
)


class Problems(list[str]):
    """Problems found so far, each a sentence that starts with its path."""

    def add(self, where: str, sentence: str) -> None:
        self.append(f"{where}: {sentence}")


def _text(value: object, where: str, most: int, problems: Problems, required: bool = False) -> bool:
    """Whether `value` is a usable text (problems named otherwise)."""
    if value is None and not required:
        return False
    if not isinstance(value, str) or not value.strip():
        problems.add(where, "must be a non-empty string.")
        return False
    if len(value) > most:
        problems.add(where, f"must be at most {most} characters (it has {len(value)}).")
        return False
    if _CONTROL.search(value):
        problems.add(where, "must not contain control characters (tab and newline are fine).")
        return False
    return True


def _unknown_keys(
    raw: dict[str, Any], known: tuple[str, ...], where: str, problems: Problems
) -> None:
    for key in raw:
        if key not in known:
            problems.add(
                f"{where}.{str(key)[:50]}", f"is not a known key (known: {', '.join(known)})."
            )


def markdown_links(body: str) -> list[str]:
    """Every link destination of a Markdown text (code spans are not links)."""
    text = _CODE_SPAN.sub("", body)
    found = [m.group(1) for m in _INLINE_LINK.finditer(text)]
    found += [m.group(1) for m in _REFERENCE.finditer(text)]
    found += [m.group(1) for m in _AUTOLINK.finditer(text)]
    return [d[1:-1].strip() if d.startswith("<") else d for d in found]


def _body(value: object, where: str, problems: Problems) -> None:
    if not _text(value, where, MAX_BODY, problems):
        return
    assert isinstance(value, str)
    for link in markdown_links(value):
        if not _SAFE_LINK.match(link):
            shown = link[:60] or "(empty)"
            problems.add(
                where,
                f"the link '{shown}' is refused: links may only be http, https or mailto "
                "(or a path on the page's own site, starting with / or #).",
            )


def check_selector(value: object, where: str, problems: Problems) -> None:
    """A CSS selector as `querySelector` takes it: parsed by cssselect (pinned, pure Python).

    cssselect reads the Selectors Level 3 grammar (and :is, :where, :has); on
    top of it, what parses there but finds no element in a browser is refused
    as well: pseudo-elements (`::before`) and `:contains()` (not CSS).
    """
    if not _text(value, where, MAX_SELECTOR, problems, required=True):
        return
    assert isinstance(value, str)
    try:
        parsed = cssselect.parse(value)
    except cssselect.SelectorError as e:
        problems.add(where, f"is not a valid CSS selector ({str(e)[:120]}).")
        return
    except Exception:  # whatever else the parser trips on is no selector either, never a 500
        problems.add(where, "is not a valid CSS selector.")
        return
    if any(s.pseudo_element is not None for s in parsed):
        problems.add(
            where, "names a pseudo-element (::before...), which is no element to point at."
        )
        return
    if re.search(r":(?:-soup-)?contains(?:-own)?\(", value, re.I):
        problems.add(
            where, "':contains()' is not CSS that browsers know: use target.text to match text."
        )
        return
    bare = _STRINGS.sub('""', value)
    for match in _PSEUDO.finditer(bare):
        name, call = match.group(1).lower(), match.group(2)
        if name not in (PSEUDO_FUNCTIONS if call else PSEUDO_CLASSES):
            shown = f":{name}()" if call else f":{name}"
            problems.add(where, f"'{shown[:40]}' is not a pseudo-class browsers know.")
            return
    for match in _NTH.finditer(bare):
        if not _AN_PLUS_B.match(match.group(1)):
            problems.add(where, f"'{match.group(0)[:60]}' needs An+B (2n+1, odd, even, 3).")
            return
    if _NAMESPACE.search(bare.replace("*|", "")):
        problems.add(where, "uses a namespace prefix (ns|name), which querySelector refuses.")


def _target(raw: object, where: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        problems.add(where, "must be an object with a selector.")
        return None
    _unknown_keys(raw, TARGET_KEYS, where, problems)
    target: dict[str, Any] = {"selector": raw.get("selector")}
    check_selector(raw.get("selector"), f"{where}.selector", problems)
    fallbacks = raw.get("fallbacks", [])
    if not isinstance(fallbacks, list) or len(fallbacks) > MAX_FALLBACKS:
        problems.add(f"{where}.fallbacks", f"must be a list of at most {MAX_FALLBACKS} selectors.")
    else:
        for i, selector in enumerate(fallbacks):
            check_selector(selector, f"{where}.fallbacks[{i}]", problems)
        target["fallbacks"] = fallbacks
    if "text" in raw:
        _text(raw["text"], f"{where}.text", MAX_TARGET_TEXT, problems, required=True)
        target["text"] = raw["text"]
    wait_ms = raw.get("wait_ms", DEFAULT_WAIT_MS)
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not 0 <= wait_ms <= MAX_WAIT_MS:
        problems.add(f"{where}.wait_ms", f"must be an integer from 0 to {MAX_WAIT_MS}.")
    target["wait_ms"] = wait_ms
    placement = raw.get("placement", "auto")
    if placement not in PLACEMENTS:
        problems.add(f"{where}.placement", f"must be one of {', '.join(PLACEMENTS)}.")
    target["placement"] = placement
    return target


def _buttons(
    raw: object, where: str, leaving: set[str], final: bool, problems: Problems
) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > MAX_BUTTONS:
        problems.add(where, f"must be a list of at most {MAX_BUTTONS} buttons.")
        return []
    buttons = []
    for i, button in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(button, dict):
            problems.add(at, "must be an object with a label and a transition.")
            continue
        _unknown_keys(button, BUTTON_KEYS, at, problems)
        _text(button.get("label"), f"{at}.label", MAX_LABEL, problems, required=True)
        out: dict[str, Any] = {"label": button.get("label")}
        transition, action = button.get("transition"), button.get("action")
        if transition is not None and action is not None:
            problems.add(at, "has both a transition and an action: give one.")
        elif action is not None:
            if action != "complete":
                problems.add(f"{at}.action", "must be 'complete' (or give a transition instead).")
            elif not final:
                problems.add(
                    f"{at}.action",
                    "'complete' is only for a final step (one with no outgoing transition); "
                    "give a transition that leaves this step.",
                )
            out["action"] = action
        elif transition is None:
            problems.add(at, 'needs a transition (or, on a final step, "action": "complete").')
        else:
            if not isinstance(transition, str) or transition not in leaving:
                known = ", ".join(sorted(leaving)[:10]) or "none: it is a final step"
                problems.add(
                    f"{at}.transition",
                    f"'{str(transition)[:60]}' does not leave this step "
                    f"(its transitions: {known}).",
                )
            out["transition"] = transition
        style = button.get("style", "primary")
        if style not in STYLES:
            problems.add(f"{at}.style", f"must be one of {', '.join(STYLES)}.")
        out["style"] = style
        buttons.append(out)
    return buttons


def _items(raw: object, where: str, steps: set[str], problems: Problems) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ITEMS:
        problems.add(where, f"must be a list of 1 to {MAX_ITEMS} items, each a label and a step.")
        return []
    items = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.add(at, "must be an object with a label and a step.")
            continue
        _unknown_keys(item, ITEM_KEYS, at, problems)
        _text(item.get("label"), f"{at}.label", MAX_LABEL, problems, required=True)
        step = item.get("step")
        if not isinstance(step, str) or step not in steps:
            problems.add(f"{at}.step", f"'{str(step)[:60]}' is not a step of this flow.")
        items.append({"label": item.get("label"), "step": step})
    return items


def _labels(
    raw: object, where: str, count: int, what: str, problems: Problems
) -> list[dict[str, Any]]:
    """A locale's `buttons` or `items`: one {"label"} for each of the default's, in order."""
    if not isinstance(raw, list) or len(raw) != count:
        problems.add(where, f"must translate each of the {count} {what}: a list of {count} labels.")
        return []
    out = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            problems.add(at, 'must be an object {"label": ...}.')
            continue
        _unknown_keys(entry, ("label",), at, problems)
        _text(entry.get("label"), f"{at}.label", MAX_LABEL, problems, required=True)
        out.append({"label": entry.get("label")})
    return out


def _locales(
    raw: object, where: str, content: dict[str, Any], problems: Problems
) -> dict[str, Any]:
    if not isinstance(raw, dict) or len(raw) > MAX_LOCALES:
        problems.add(where, f"must be an object of at most {MAX_LOCALES} locales.")
        return {}
    seen: set[str] = set()
    out = {}
    for code, texts in raw.items():
        at = f"{where}.{str(code)[:50]}"
        if not BCP47.match(code) or len(code) > 35:
            problems.add(at, "is not a BCP 47 language tag (for example fr, pt-BR, zh-Hant).")
            continue
        if code.lower() in seen:
            problems.add(at, "is given twice (locale codes are not case sensitive).")
            continue
        seen.add(code.lower())
        if not isinstance(texts, dict):
            problems.add(at, "must be an object of translated texts.")
            continue
        _unknown_keys(texts, LOCALE_KEYS, at, problems)
        locale: dict[str, Any] = {}
        for key, most in (("title", MAX_TITLE), ("body", MAX_BODY)):
            if key in content:
                if key not in texts:
                    problems.add(at, f"leaves the {key} untranslated: give {key}.")
                elif key == "body":
                    _body(texts[key], f"{at}.body", problems)
                else:
                    _text(texts[key], f"{at}.{key}", most, problems, required=True)
                locale[key] = texts.get(key)
            elif key in texts:
                problems.add(f"{at}.{key}", f"translates a {key} the content does not have.")
        for key, what in (("buttons", "buttons"), ("items", "items")):
            if content.get(key):
                if key not in texts:
                    problems.add(at, f"leaves the {what} untranslated: give {key}.")
                else:
                    locale[key] = _labels(
                        texts[key], f"{at}.{key}", len(content[key]), what, problems
                    )
            elif key in texts:
                problems.add(f"{at}.{key}", f"translates {what} the content does not have.")
        out[code] = locale
    return out


def validate(
    raw: object, where: str, step: str, steps: set[str], leaving: set[str], problems: Problems
) -> dict[str, Any] | None:
    """A step's content with its defaults filled in, or None (problems named)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.add(where, "must be an object with a type.")
        return None
    _unknown_keys(raw, CONTENT_KEYS, where, problems)
    kind = raw.get("type")
    if kind not in TYPES:
        problems.add(f"{where}.type", f"'{str(kind)[:40]}' is not one of {', '.join(TYPES)}.")
    content: dict[str, Any] = {"type": kind}
    if "title" in raw:
        _text(raw["title"], f"{where}.title", MAX_TITLE, problems, required=True)
        content["title"] = raw["title"]
    if "body" in raw:
        _body(raw["body"], f"{where}.body", problems)
        content["body"] = raw["body"]
    if "title" not in raw and "body" not in raw and kind != "checklist":
        problems.add(where, "has nothing to show: give a title or a body.")
    if raw.get("target") is not None:
        target = _target(raw["target"], f"{where}.target", problems)
        if target is not None:
            content["target"] = target
    elif kind in NEEDS_TARGET:
        problems.add(f"{where}.target", f"is required for a {kind}: the element it points at.")
    final = not leaving
    if raw.get("buttons") is not None:
        content["buttons"] = _buttons(raw["buttons"], f"{where}.buttons", leaving, final, problems)
    dismiss = raw.get("dismiss", "exit")
    if dismiss not in DISMISS:
        problems.add(f"{where}.dismiss", f"must be one of {', '.join(DISMISS)}.")
    content["dismiss"] = dismiss
    if kind == "checklist":
        content["items"] = _items(raw.get("items"), f"{where}.items", steps, problems)
    elif raw.get("items") is not None:
        problems.add(f"{where}.items", "are only for a checklist.")
    if raw.get("locales") is not None:
        locales = _locales(raw["locales"], f"{where}.locales", content, problems)
        if locales:
            content["locales"] = locales
    return content


def check_total(contents: list[dict[str, Any] | None], problems: list[str]) -> None:
    """The whole of a version's content: bounded, as get_content answers it in one message."""
    most = settings.STEPSTREAM["MAX_CONTENT_BYTES"]
    size = sum(len(orjson.dumps(c)) for c in contents if c is not None)
    if size > most:
        problems.append(
            f"steps: their content totals {size} bytes, over the limit of {most} "
            "(STEPSTREAM_MAX_CONTENT_BYTES): shorten texts or move some to another flow."
        )


# --- reading: one locale's texts ---------------------------------------------------------


def pick_locale(wanted: str | None, available: list[str]) -> str:
    """The locale to answer: the one asked for, else its language alone, else "default"."""
    if not wanted:
        return DEFAULT_LOCALE
    by_lower = {code.lower(): code for code in available}
    parts = wanted.lower().split("-")
    while parts:
        found = by_lower.get("-".join(parts))
        if found is not None:
            return found
        parts.pop()
    return DEFAULT_LOCALE


def localize(content: dict[str, Any], locale: str) -> dict[str, Any]:
    """The content with that locale's texts over the default's, without `locales`."""
    out = {k: v for k, v in content.items() if k != "locales"}
    texts = content.get("locales", {}).get(locale)
    if texts is None:
        return out
    for key in ("title", "body"):
        if key in texts:
            out[key] = texts[key]
    for key in ("buttons", "items"):
        if key in texts:
            out[key] = [
                {**entry, "label": label["label"]}
                for entry, label in zip(out[key], texts[key], strict=True)
            ]
    return out


MAX_LOCALIZED = 2_000  # versions whose answers are kept per process
MAX_LOCALES_KEPT = 64  # locales asked for, kept per version (each maps to one of the version's)
# {flow version's id: {the locale asked for, lowercased: the answer}}
_localized: BoundedMemo[dict[str, dict[str, Any]]] = BoundedMemo(MAX_LOCALIZED)


def forget(flow_id: int) -> None:
    """A version just published under this id (a test database rolled back reuses ids)."""
    _localized.pop(flow_id)


def for_locale(
    flow_id: int,
    identifier: str,
    version: int,
    read_steps: Callable[[], list[tuple[str, Any]]],
    wanted: str | None,
) -> dict[str, Any]:
    """get_content's answer for a version; `read_steps` gives (identifier, content or None)."""
    key = (wanted or "").lower()
    answers = _localized.get(flow_id)
    cached = answers.get(key) if answers is not None else None
    if cached is not None and (cached["flow"], cached["version"]) == (identifier, version):
        return cached
    steps = read_steps()
    available = sorted({code for _, c in steps if c for code in c.get("locales", {})})
    locale = pick_locale(wanted, available)
    answer_steps = []
    for step, content in steps:
        if content is None:
            continue
        own = pick_locale(locale, list(content.get("locales", {})))
        answer_steps.append({"identifier": step, "locale": own, "content": localize(content, own)})
    answer = {"flow": identifier, "version": version, "locale": locale, "steps": answer_steps}
    if answers is None or (answers and next(iter(answers.values()))["flow"] != identifier):
        answers = {}
        _localized.put(flow_id, answers)
    # asked-for locales that fall back to the same one share its answer: a client asking
    # for many unknown locales keeps one copy per version, not one per locale asked
    answer = next((a for a in answers.values() if a["locale"] == locale), answer)
    if len(answers) < MAX_LOCALES_KEPT:
        answers[key] = answer
    return answer
