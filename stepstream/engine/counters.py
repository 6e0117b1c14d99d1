"""Counters kept by database triggers, so a flow's numbers cost a few rows, not a scan.

Summing 700,000 step instances for a flow with 100,000 people took 2 to 3
seconds on SQLite even with covering indexes (docs/performance-history.md). Instead,
triggers on the step and flow instance tables keep `StepCount` rows (per
flow version, step and shard: how many instances are in each state), and a
trigger on the log keeps `StepDuration`, a histogram of the times from a
step becoming active to its completion. They run inside the transaction of
every write, whoever makes it (the engine, the admin, a cascade delete), so
the counts are exactly as committed: no follower, no drift, no recount.

Step rows count only `active` and `completed` (an inactive step fires no
trigger: a flow start inserts every step of its version, most of them
inactive). Rows are spread over 16 shards (the person's id modulo 16), so on
PostgreSQL concurrent transitions of different people on one flow rarely
wait on the same counter row. Each trigger does one upsert per changed row.

Installed by migration 0006_dashboard (`install`); a change here needs a new
migration that drops and recreates them.
"""

from typing import Any

from django.db.backends.base.schema import BaseDatabaseSchemaEditor

SHARDS = 16
BUCKETS = 160  # quarter-octaves of ms: bucket k holds durations up to 2^(k/4) ms (~28 years)
STATES = ("inactive", "active", "completed", "exited")
# Steps count only what the dashboard shows (active, completed; reached is their sum), so a
# flow start, which inserts every step of the version inactive, touches one counter row per
# start step, not one per step: inactive step rows fire no trigger at all.
STEP_STATES = ("active", "completed")

C = "stepstream_stepcount"
D = "stepstream_stepduration"
B = "stepstream_durationbucket"
S = "stepstream_stepinstance"
I = "stepstream_flowinstance"  # noqa: E741
L = "stepstream_statechange"

_UPSERT_COUNTS = "ON CONFLICT (flow_id, identifier, shard) DO UPDATE SET " + ", ".join(
    f"n_{s} = {C}.n_{s} + excluded.n_{s}" for s in STATES
)


def _delta(
    postgres: bool, new: str | None, old: str | None, counted: tuple[str, ...] = STATES
) -> str:
    """The columns' deltas: +1 for the new state, -1 for the old one (0 if not counted)."""
    cast = "::int" if postgres else ""
    parts = []
    for state in STATES:
        if state not in counted:
            parts.append("0")
            continue
        terms = []
        if new:
            terms.append(f"({new} = '{state}'){cast}")
        if old:
            terms.append(f"- ({old} = '{state}'){cast}")
        parts.append(" ".join(terms) if new else "0 " + " ".join(terms))
    return ", ".join(parts)


def _step_upsert(postgres: bool, row: str, new: str | None, old: str | None) -> str:
    columns = ", ".join(f"n_{s}" for s in STATES)
    return (
        f"INSERT INTO {C} (flow_id, identifier, shard, {columns}) "
        f"SELECT i.flow_id, {row}.identifier, i.person_id % {SHARDS}, "
        f"{_delta(postgres, new, old, STEP_STATES)} "
        f"FROM {I} i WHERE i.id = {row}.instance_id {_UPSERT_COUNTS};"
    )


def _flow_upsert(postgres: bool, row: str, new: str | None, old: str | None) -> str:
    columns = ", ".join(f"n_{s}" for s in STATES)
    return (
        f"INSERT INTO {C} (flow_id, identifier, shard, {columns}) "
        f"SELECT {row}.flow_id, '', {row}.person_id % {SHARDS}, {_delta(postgres, new, old)} "
        f"WHERE TRUE {_UPSERT_COUNTS};"
    )


def _orphan_steps(postgres: bool) -> str:
    """An instance deleted before its steps: take its steps out now (their own delete finds
    no instance and does nothing), so either deletion order leaves the counts right."""
    cast = "::int" if postgres else ""
    columns = ", ".join(f"n_{s}" for s in STATES)
    sums = ", ".join(
        f"-SUM((s.state = '{state}'){cast})" if state in STEP_STATES else "0" for state in STATES
    )
    return (
        f"INSERT INTO {C} (flow_id, identifier, shard, {columns}) "
        f"SELECT OLD.flow_id, s.identifier, OLD.person_id % {SHARDS}, {sums} "
        f"FROM {S} s WHERE s.instance_id = OLD.id AND s.state <> 'inactive' "
        f"GROUP BY s.identifier {_UPSERT_COUNTS};"
    )


def _duration_insert(postgres: bool) -> str:
    """One histogram upsert per step completion; the previous change of that step instance
    (its activation) is read once, through the (person, seq) index."""
    previous = (
        f"(SELECT p.occurred_at FROM {L} p WHERE p.person_id = NEW.person_id "
        f"AND p.object_id = NEW.object_id AND p.seq < NEW.seq ORDER BY p.seq DESC LIMIT 1)"
    )
    if postgres:
        ms = "EXTRACT(EPOCH FROM (NEW.occurred_at - x.prev)) * 1000.0"
        # bucket k holds durations up to 2^(k/4) ms: k = ceil(4 log2 ms), as the table says
        bucket = f"LEAST({BUCKETS - 1}, CEIL(4 * LN(GREATEST({ms}, 1.0)) / LN(2))::int)"
    else:  # SQLite may be built without math functions: the boundaries are a table
        ms = "(julianday(NEW.occurred_at) - julianday(x.prev)) * 86400000.0"
        bucket = (
            f"COALESCE((SELECT MIN(b.bucket) FROM {B} b WHERE b.upper_ms >= {ms}), {BUCKETS - 1})"
        )
    return (
        f"INSERT INTO {D} (flow_id, identifier, bucket, shard, n) "
        f"SELECT i.flow_id, NEW.identifier, {bucket}, NEW.person_id % {SHARDS}, 1 "
        f"FROM {I} i, (SELECT {previous} AS prev) x "
        f"WHERE i.id = NEW.flow_instance_id AND x.prev IS NOT NULL "
        f"ON CONFLICT (flow_id, identifier, bucket, shard) DO UPDATE SET n = {D}.n + 1;"
    )


def bucket_upper_ms(k: int) -> float:
    return 2 ** (k / 4)


def _sqlite_sql() -> list[str]:
    return [
        f"CREATE TRIGGER ss_dash_step_insert AFTER INSERT ON {S} "
        "WHEN NEW.state <> 'inactive' BEGIN "
        + _step_upsert(False, "NEW", "NEW.state", None)
        + " END",
        f"CREATE TRIGGER ss_dash_step_update AFTER UPDATE OF state ON {S} "
        "WHEN OLD.state IS NOT NEW.state BEGIN "
        + _step_upsert(False, "NEW", "NEW.state", "OLD.state")
        + " END",
        f"CREATE TRIGGER ss_dash_step_delete AFTER DELETE ON {S} "
        "WHEN OLD.state <> 'inactive' BEGIN "
        + _step_upsert(False, "OLD", None, "OLD.state")
        + " END",
        f"CREATE TRIGGER ss_dash_flow_insert AFTER INSERT ON {I} BEGIN "
        + _flow_upsert(False, "NEW", "NEW.state", None)
        + " END",
        f"CREATE TRIGGER ss_dash_flow_update AFTER UPDATE OF state ON {I} "
        "WHEN OLD.state IS NOT NEW.state BEGIN "
        + _flow_upsert(False, "NEW", "NEW.state", "OLD.state")
        + " END",
        f"CREATE TRIGGER ss_dash_flow_delete AFTER DELETE ON {I} BEGIN "
        + _flow_upsert(False, "OLD", None, "OLD.state")
        + " "
        + _orphan_steps(False)
        + " END",
        f"CREATE TRIGGER ss_dash_duration AFTER INSERT ON {L} "
        "WHEN NEW.entity = 'step' AND NEW.state = 'completed' AND NEW.previous_state = 'active' "
        "BEGIN " + _duration_insert(False) + " END",
    ]


def _postgres_sql() -> list[str]:
    def function(name: str, body: str) -> str:
        return (
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body} RETURN NULL; END $$"
        )

    step = (
        "IF TG_OP = 'INSERT' THEN "
        + _step_upsert(True, "NEW", "NEW.state", None)
        + " ELSIF TG_OP = 'UPDATE' THEN "
        + _step_upsert(True, "NEW", "NEW.state", "OLD.state")
        + " ELSE "
        + _step_upsert(True, "OLD", None, "OLD.state")
        + " END IF;"
    )
    flow = (
        "IF TG_OP = 'INSERT' THEN "
        + _flow_upsert(True, "NEW", "NEW.state", None)
        + " ELSIF TG_OP = 'UPDATE' THEN IF OLD.state IS DISTINCT FROM NEW.state THEN "
        + _flow_upsert(True, "NEW", "NEW.state", "OLD.state")
        + " END IF; ELSE "
        + _flow_upsert(True, "OLD", None, "OLD.state")
        + " "
        + _orphan_steps(True)
        + " END IF;"
    )
    duration = _duration_insert(True)
    return [
        function("ss_dash_step", step),
        function("ss_dash_flow", flow),
        function("ss_dash_duration", duration),
        # WHEN is checked without entering PL/pgSQL: inactive steps cost nothing
        f"CREATE TRIGGER ss_dash_step_insert AFTER INSERT ON {S} FOR EACH ROW "
        "WHEN (NEW.state <> 'inactive') EXECUTE FUNCTION ss_dash_step()",
        f"CREATE TRIGGER ss_dash_step_update AFTER UPDATE OF state ON {S} FOR EACH ROW "
        "WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION ss_dash_step()",
        f"CREATE TRIGGER ss_dash_step_delete AFTER DELETE ON {S} FOR EACH ROW "
        "WHEN (OLD.state <> 'inactive') EXECUTE FUNCTION ss_dash_step()",
        f"CREATE TRIGGER ss_dash_flow AFTER INSERT OR UPDATE OF state OR DELETE ON {I} "
        "FOR EACH ROW EXECUTE FUNCTION ss_dash_flow()",
        f"CREATE TRIGGER ss_dash_duration AFTER INSERT ON {L} FOR EACH ROW "
        "WHEN (NEW.entity = 'step' AND NEW.state = 'completed' AND NEW.previous_state = 'active') "
        "EXECUTE FUNCTION ss_dash_duration()",
    ]


def _backfill(postgres: bool) -> list[str]:
    """Counts for the rows that exist already (the durations start from now)."""
    cast = "::int" if postgres else ""
    sums = ", ".join(f"SUM((x.state = '{state}'){cast})" for state in STATES)
    columns = ", ".join(f"n_{s}" for s in STATES)
    step_sums = ", ".join(
        f"SUM((s.state = '{state}'){cast})" if state in STEP_STATES else "0" for state in STATES
    )
    return [
        f"INSERT INTO {C} (flow_id, identifier, shard, {columns}) "
        f"SELECT i.flow_id, s.identifier, i.person_id % {SHARDS}, {step_sums} "
        f"FROM {S} s JOIN {I} i ON i.id = s.instance_id WHERE s.state <> 'inactive' "
        f"GROUP BY i.flow_id, s.identifier, i.person_id % {SHARDS}",
        f"INSERT INTO {C} (flow_id, identifier, shard, {columns}) "
        f"SELECT i.flow_id, '', i.person_id % {SHARDS}, "
        + sums.replace("x.", "i.")
        + f" FROM {I} i GROUP BY i.flow_id, i.person_id % {SHARDS}",
    ]


def install(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:  # a migration's RunPython
    postgres = schema_editor.connection.vendor == "postgresql"
    statements = [
        f"CREATE TABLE {B} (bucket integer PRIMARY KEY, upper_ms double precision NOT NULL)",
        f"CREATE INDEX {B}_upper ON {B} (upper_ms)",
    ]
    statements += [
        f"INSERT INTO {B} (bucket, upper_ms) VALUES ({k}, {bucket_upper_ms(k)!r})"
        for k in range(BUCKETS)
    ]
    statements += _postgres_sql() if postgres else _sqlite_sql()
    statements += _backfill(postgres)
    with schema_editor.connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


def uninstall(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    with schema_editor.connection.cursor() as cursor:
        if postgres:
            for name in ("ss_dash_step_insert", "ss_dash_step_update", "ss_dash_step_delete"):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {S}")
            cursor.execute(f"DROP TRIGGER IF EXISTS ss_dash_flow ON {I}")
            cursor.execute(f"DROP TRIGGER IF EXISTS ss_dash_duration ON {L}")
            for name in ("ss_dash_step", "ss_dash_flow", "ss_dash_duration"):
                cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            for name in (
                "ss_dash_step_insert",
                "ss_dash_step_update",
                "ss_dash_step_delete",
                "ss_dash_flow_insert",
                "ss_dash_flow_update",
                "ss_dash_flow_delete",
                "ss_dash_duration",
            ):
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        cursor.execute(f"DROP TABLE IF EXISTS {B}")


def median_from_histogram(buckets: dict[int, int]) -> float | None:
    """The median duration in seconds, interpolated inside the bucket that holds it."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    half = total / 2
    seen = 0
    for k in sorted(buckets):
        n = buckets[k]
        if n <= 0:
            continue
        if seen + n >= half:
            low = 0.0 if k == 0 else bucket_upper_ms(k - 1)
            high = bucket_upper_ms(k)
            return (low + (high - low) * (half - seen) / n) / 1000.0
        seen += n
    return None
