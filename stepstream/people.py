"""People: create, replace, merge and delete, with data checked by the environment's schema."""

from django.db import IntegrityError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from stepstream import store
from stepstream.errors import Invalid
from stepstream.models import Environment, Person
from stepstream.text import reject_nul


def check_person_key(person_key) -> str:
    if not isinstance(person_key, str) or not person_key or len(person_key) > 255:
        raise Invalid("person_key must be a non-empty string of at most 255 characters.")
    reject_nul(person_key, "person_key")
    return person_key


def check_data(environment: Environment, data) -> dict:
    if not isinstance(data, dict):
        raise Invalid("data must be a JSON object.")
    reject_nul(data, "data")
    schema = environment.person_schema
    if schema:
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        problems = [
            f"data{e.json_path[1:]}: {e.message}"
            for e in sorted(validator.iter_errors(data), key=lambda e: list(e.path))
        ]
        if problems:
            raise Invalid(*problems)
    return data


def set_schema(environment: Environment, schema) -> dict:
    if not isinstance(schema, dict):
        raise Invalid("The schema must be a JSON object (a JSON Schema, draft 2020-12).")
    reject_nul(schema, "The schema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise Invalid(f"Invalid JSON Schema: {e.message}") from None
    environment.person_schema = schema
    environment.save(update_fields=["person_schema"])
    return schema


def get(environment: Environment, person_key: str) -> Person:
    try:
        return Person.objects.get(environment=environment, person_key=person_key)
    except Person.DoesNotExist:
        raise store.person_not_found(person_key) from None


def locked(environment: Environment, person_key: str) -> Person:
    """The person, row-locked until the transaction ends (serializes their changes)."""
    try:
        return Person.objects.select_for_update().get(
            environment=environment, person_key=person_key
        )
    except Person.DoesNotExist:
        raise store.person_not_found(person_key) from None


def put(environment: Environment, person_key: str, data) -> tuple[Person, bool]:
    """Creates or replaces a person's data; True when created."""
    check_person_key(person_key)
    check_data(environment, data)
    for _ in range(2):
        try:
            with store.writing():
                updated = Person.objects.filter(
                    environment=environment, person_key=person_key
                ).update(data=data)
                if updated:
                    return get(environment, person_key), False
                return Person.objects.create(
                    environment=environment, person_key=person_key, data=data
                ), True
        except IntegrityError:
            continue  # created concurrently: replace it instead
    raise Invalid(f"person_key '{person_key}' is being created concurrently; retry.")


def merge(environment: Environment, person_key: str, data) -> Person:
    """Creates the person, or merges top-level keys of `data` into theirs."""
    check_person_key(person_key)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise Invalid("data must be a JSON object.")
    for _ in range(2):
        try:
            with store.writing():
                person = (
                    Person.objects.select_for_update()
                    .filter(environment=environment, person_key=person_key)
                    .first()
                )
                if person is None:
                    check_data(environment, data)
                    return Person.objects.create(
                        environment=environment, person_key=person_key, data=data
                    )
                if data:
                    merged = {**person.data, **data}
                    check_data(environment, merged)
                    person.data = merged
                    person.save(update_fields=["data"])
                return person
        except IntegrityError:
            continue
    raise Invalid(f"person_key '{person_key}' is being created concurrently; retry.")


def delete(environment: Environment, person_key: str) -> None:
    deleted, _ = Person.objects.filter(environment=environment, person_key=person_key).delete()
    if not deleted:
        raise store.person_not_found(person_key)


def describe(person: Person) -> dict:
    return {"person_key": person.person_key, "data": person.data}
