"""Model rows read with plain SQL, their values converted as the ORM converts them.

For hot reads where building the query through the ORM cost more than
running it (a reconnect storm's key and catch-up reads): the caller writes
the SQL, and each value still goes through its field's database converters
(UUIDs, datetimes and JSON on SQLite), so it gets what a queryset would give.
"""

from django.db import connection


def columns(alias: str, fields: list) -> str:
    """`alias.column, ...` for these fields, quoted for the database in use."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields)


def converters(fields: list) -> list[tuple]:
    """Each field's database converters, as the ORM's compiler finds them."""
    found = []
    for field in fields:
        col = field.get_col(field.model._meta.db_table)
        steps = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        found.append((col, steps))
    return found


def convert(values, field_converters: list) -> list:
    out = []
    for value, (col, steps) in zip(values, field_converters, strict=True):
        for step in steps:
            value = step(value, col, connection)
        out.append(value)
    return out


def instance(model, fields: list, values, field_converters: list | None = None):
    """A model instance from its fields' raw column values (`field_converters`: theirs,
    found once by the caller for many rows)."""
    converted = convert(values, field_converters or converters(fields))
    return model.from_db(connection.alias, [f.attname for f in fields], converted)
