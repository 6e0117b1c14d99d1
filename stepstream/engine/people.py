"""People: create, replace, merge and delete, with data checked by the environment's schema.

Validation does no input or output: a schema's `$ref` may only point inside
the schema itself (`#...`), refused otherwise when the schema is saved, and
the validator's registry refuses to retrieve anything, so no code path (an
old schema saved before this rule included) fetches a URL or reads a file.
"""

import json
from collections.abc import Sequence
from typing import Any, NoReturn, overload
from urllib.parse import urljoin

import orjson
from django.conf import settings
from django.db import connection
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from stepstream import strictjson
from stepstream.engine import db, store
from stepstream.errors import Invalid
from stepstream.models import Environment, Person

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef")
# keywords whose values are data, not subschemas: a "$ref" inside them is no reference
DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})


def _retrieve_nothing(uri: str) -> NoReturn:
    """The registry's only way to fetch: it never does (no network, no files)."""
    # referencing's classes are attrs classes its stubs describe in a form mypy does not read
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


REGISTRY = Registry(retrieve=_retrieve_nothing)  # type: ignore[call-arg]  # as above


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(
        schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def check_person_key(person_key: object) -> str:
    return strictjson.validate_person_key(person_key)


def check_sizes(value: object, where: str) -> None:
    """The limits conditions are costed for (docs/rules.md, "Condition budgets"): items of a
    list or entries of an object, characters of a string or key, and the JSON's bytes.
    A 400 naming the field and the setting."""
    limits = settings.STEPSTREAM
    most_items, most_chars = limits["DATA_MAX_ITEMS"], limits["DATA_MAX_STRING"]
    stack: list[tuple[object, list[str | int]]] = [(value, [])]
    while stack:
        item, parts = stack.pop()
        if isinstance(item, str):
            if len(item) > most_chars:
                field = strictjson.field_path(where, parts)
                raise Invalid(
                    f"{field} is a string of {len(item):,} characters; "
                    f"at most {most_chars:,} (STEPSTREAM_DATA_MAX_STRING)."
                )
        elif isinstance(item, dict | list):
            if len(item) > most_items:
                what = "entries" if isinstance(item, dict) else "items"
                raise Invalid(
                    f"{strictjson.field_path(where, parts)} has {len(item):,} {what}; at most "
                    f"{most_items:,} (STEPSTREAM_DATA_MAX_ITEMS)."
                )
            if isinstance(item, dict):
                for key, member in item.items():
                    if len(key) > most_chars:
                        raise Invalid(
                            f"{strictjson.field_path(where, parts)} has a key of {len(key):,} "
                            f"characters; at most {most_chars:,} (STEPSTREAM_DATA_MAX_STRING)."
                        )
                    stack.append((member, [*parts, key]))
            else:
                stack.extend((member, [*parts, i]) for i, member in enumerate(item))
    size = len(orjson.dumps(value))
    if size > limits["DATA_MAX_BYTES"]:
        raise Invalid(
            f"{where} is {size:,} bytes as JSON; at most {limits['DATA_MAX_BYTES']:,} "
            "(STEPSTREAM_DATA_MAX_BYTES)."
        )


def check_data(environment: Environment, data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Invalid("data must be a JSON object.")
    strictjson.check(data, "data", path="data")
    check_sizes(data, "data")
    schema = environment.person_schema
    if schema:
        try:
            problems = [
                f"data{e.json_path[1:]}: {e.message}"
                for e in sorted(_validator(schema).iter_errors(data), key=lambda e: list(e.path))
            ]
        except Unresolvable as e:  # a schema saved before references were checked
            raise Invalid(
                f"The environment's person schema has a reference that cannot be resolved "
                f"({str(getattr(e, 'ref', '') or '')[:100]!r}): only references inside the "
                "schema ('#...') are followed. Replace the schema with PUT /schema/person."
            ) from None
        except RecursionError:
            raise Invalid(
                "The environment's person schema loops: its references lead back to "
                "themselves without end. Replace the schema with PUT /schema/person."
            ) from None
        if problems:
            raise Invalid(*problems)
    return data


def _references(schema: object, path: str, base: str, found: list[tuple[str, str, str]]) -> None:
    """Every (where, base URI, reference) in a schema, skipping data keywords."""
    if isinstance(schema, dict):
        if isinstance(schema.get("$id"), str):
            base = urljoin(base, schema["$id"])
        for key, value in schema.items():
            if key in REFERENCE_KEYWORDS and isinstance(value, str):
                found.append((f"{path}/{key}", base, value))
            elif key not in DATA_KEYWORDS:
                _references(value, f"{path}/{key}", base, found)
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            _references(item, f"{path}/{i}", base, found)


def _check_references(schema: dict[str, Any]) -> None:
    found: list[tuple[str, str, str]] = []
    given = schema.get("$id")
    root = given if isinstance(given, str) else ""
    _references(schema, "", root, found)
    problems = [
        f"The schema at {where}: '{ref[:100]}' points outside the schema; a reference may "
        "only point inside it ('#...', e.g. '#/$defs/address'): validation fetches nothing."
        for where, _, ref in found
        if not ref.startswith("#")
    ]
    if problems:
        raise Invalid(*problems)
    registry = REGISTRY.with_resource(root, DRAFT202012.create_resource(schema)).crawl()
    for where, base, ref in found:
        try:
            registry.resolver(base_uri=base).lookup(ref)
        except Unresolvable:
            problems.append(f"The schema at {where}: '{ref[:100]}' points to nothing in it.")
    if problems:
        raise Invalid(*problems)
    validator = _validator(schema)
    probe: object
    try:  # a schema whose references lead back to themselves never ends
        for probe in ({}, [], "", 0, None):
            validator.is_valid(probe)
    except RecursionError:
        raise Invalid(
            "The schema loops: its references lead back to themselves without end."
        ) from None


def set_schema(environment: Environment, schema: object) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise Invalid("The schema must be a JSON object (a JSON Schema, draft 2020-12).")
    strictjson.check(schema, "The schema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        where = e.json_path[2:] if len(e.json_path) > 1 else ""
        raise Invalid(
            f"Invalid JSON Schema{' at ' + where if where else ''}: {e.message}"
        ) from None
    _check_references(schema)
    environment.person_schema = schema
    environment.save(update_fields=["person_schema"])
    return schema


def get(environment: Environment, person_key: str) -> Person:
    try:
        return Person.objects.get(environment=environment, person_key=person_key)
    except Person.DoesNotExist:
        raise store.person_not_found(person_key) from None


@overload
def describe_by_key(
    environment: Environment, person_key: str, also: tuple[()] = ()
) -> dict[str, Any]: ...
@overload
def describe_by_key(
    environment: Environment, person_key: str, also: tuple[str, Sequence[Any]]
) -> tuple[Any, dict[str, Any] | None]: ...
def describe_by_key(
    environment: Environment, person_key: str, also: tuple[()] | tuple[str, Sequence[Any]] = ()
) -> dict[str, Any] | tuple[Any, dict[str, Any] | None]:
    """`describe(get(...))` in one plain query: the ORM's query building took twice as long
    as the database's answer on the hottest REST read (docs/performance-history.md).

    `also` is (sql, params) of one more scalar selected in the same round trip (a key
    re-check); with it the answer is (its value, the description or None when not found).
    """
    table = Person._meta.db_table
    sql = f"(SELECT data FROM {table} WHERE environment_id = %s AND person_key = %s)"
    params: list[int | str] = [environment.pk, person_key]
    with connection.cursor() as cursor:
        if also:
            cursor.execute(f"SELECT {also[0]}, {sql}", [*also[1], *params])
            extra, data = cursor.fetchone()
        else:
            cursor.execute(f"SELECT {sql}", params)
            extra, data = None, cursor.fetchone()[0]
    found = None
    if data is not None:
        found = {
            "person_key": person_key,
            "data": json.loads(data) if isinstance(data, str) else data,
        }
    if also:
        return extra, found
    if found is None:
        raise store.person_not_found(person_key)
    return found


def locked(environment: Environment, person_key: str) -> Person:
    """The person, row-locked until the transaction ends (serializes their changes)."""
    try:
        return Person.objects.select_for_update().get(
            environment=environment, person_key=person_key
        )
    except Person.DoesNotExist:
        raise store.person_not_found(person_key) from None


@db.retried
def delete(environment: Environment, person_key: str) -> None:
    deleted, _ = Person.objects.filter(environment=environment, person_key=person_key).delete()
    if not deleted:
        raise store.person_not_found(person_key)


def describe(person: Person) -> dict[str, Any]:
    return {"person_key": person.person_key, "data": person.data}
