"""Where each subscribed person's log stands: read for many subscribes in one database job.

A subscribe needs the person's row id and latest `seq`; a reconnecting
browser subscribes twice (`flow` and `step`), and after a restart thousands
do at once. The subscribes waiting at the same moment share one job
(stepstream.ws.batched), so what a subscription starts from is what it was
before (docs/architecture.md).
"""

from django.db import connection

from stepstream.dbthreads import DbThreads
from stepstream.engine.store import person_not_found
from stepstream.models import Environment, Person
from stepstream.ws.batched import Batched

CHUNK = 500  # people per query (SQLite's bound parameters stay well under its limit)


def _read(wanted: list[tuple[int, str]]) -> dict[tuple[int, str], tuple[int, int]]:
    """One indexed query per environment and 500 people. Plain SQL: building the
    ORM's IN (...) of hundreds of values cost more than running it."""
    by_environment: dict[int, list[str]] = {}
    for environment_id, key in wanted:
        by_environment.setdefault(environment_id, []).append(key)
    found: dict[tuple[int, str], tuple[int, int]] = {}
    table = connection.ops.quote_name(Person._meta.db_table)
    with connection.cursor() as cursor:
        for environment_id, keys in by_environment.items():
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(
                    f"SELECT person_key, id, last_seq FROM {table} "  # noqa: S608 - no input
                    f"WHERE environment_id = %s AND person_key IN ({marks})",
                    [environment_id, *chunk],
                )
                for key, pk, last_seq in cursor.fetchall():
                    found[(environment_id, key)] = (pk, last_seq)
    return found


class Positions:
    """The batched reader of one runtime's database threads."""

    def __init__(self, db: DbThreads) -> None:
        self._batched: Batched[tuple[int, str], tuple[int, int]] = Batched(
            _read, db, missing=lambda wanted: person_not_found(wanted[1])
        )

    async def position(self, environment: Environment, person_key: str) -> tuple[int, int]:
        """(person id, last seq) of the environment's person; NotFound when there is none."""
        found = await self._batched.get((environment.pk, person_key))
        assert found is not None  # a person not found raises (missing)
        return found
