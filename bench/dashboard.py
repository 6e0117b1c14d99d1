"""How long the dashboard takes to render with many people (docs/performance.md, "Dashboard").

    python -m bench.dashboard [--people 100000] [--runs 5]

Builds (once per data directory) an environment with the demo's onboarding
flow and PEOPLE instances spread over its stages, with realistic log rows
(the engine's own in-memory rules compute every state and change; they are
written in bulk, which is far faster than a transaction per person), then
renders the flow page, the people page and a person page through Django's
test client as a signed-in staff user, and times the SQL behind them.

SQLite in a temporary data directory by default (or STEPSTREAM_DATA_DIR to
keep it between runs); DATABASE_URL for PostgreSQL. Prints one JSON object.
"""

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta


def _django(data_dir: str | None) -> None:
    if not os.environ.get("DATABASE_URL"):
        os.environ.setdefault("STEPSTREAM_DATA_DIR", data_dir or tempfile.mkdtemp(prefix="dash-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stepstream.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False, stdout=sys.stderr)


# the order people go through the demo's onboarding; a person stops after some of them
PLAN = ["start", "task-created", "invited", "due-date-set"]
STAGES = [0.25, 0.35, 0.2, 0.1, 0.1]  # share of people stopping after 0, 1, 2, 3, 4 moves


def build(people: int, seed: int = 7) -> int:
    """An environment with `people` onboarding instances; its id (reused when it exists)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from stepstream.engine import flows
    from stepstream.engine.sessions import Run
    from stepstream.engine.store import InstanceRow, PersonRow, StepRow
    from stepstream.http.demo import DEMO_FLOW
    from stepstream.models import FlowInstance, Person, Project, StateChange, StepInstance
    from stepstream.trust import tenants

    name = f"dashboard bench {people}"
    project = Project.objects.filter(name=name).first()
    if project is not None:
        return project.environments.get(identifier="development").pk
    tenants.create_project(name)
    env = Project.objects.get(name=name).environments.get(identifier="development")
    flows.publish(env, DEMO_FLOW)
    flow_id = flows.latest_id(env, "onboarding")
    graph = flows.graph(flow_id)
    rng = random.Random(seed)
    first_pk = (Person.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    base = timezone.now() - timedelta(days=30)
    started = time.perf_counter()
    batch: dict[str, list] = {"people": [], "instances": [], "steps": [], "log": []}

    def flush():
        with transaction.atomic():
            Person.objects.bulk_create(batch["people"], batch_size=2000)
            FlowInstance.objects.bulk_create(batch["instances"], batch_size=2000)
            StepInstance.objects.bulk_create(batch["steps"], batch_size=2000)
            StateChange.objects.bulk_create(batch["log"], batch_size=2000)
        for rows in batch.values():
            rows.clear()

    for i in range(people):
        pk = first_pk + i
        person = PersonRow(pk, f"user-{i:06}@example.com", 0)
        instance = InstanceRow(uuid.uuid4(), flow_id, "onboarding", "inactive")
        steps = [StepRow(uuid.uuid4(), s, n, k) for k, (s, n) in enumerate(graph.steps)]
        run = Run(person, instance, steps)
        at = base + timedelta(seconds=rng.uniform(0, 25 * 86400))
        stamps = []
        run.set_flow("active", previous="inactive")
        for identifier in graph.start:
            run.activate(identifier)
        run.settle()
        stamps.append((len(run.recorder.rows), at))
        moves = rng.choices(range(len(STAGES)), weights=STAGES)[0]
        for transition in PLAN[:moves]:
            at += timedelta(seconds=rng.lognormvariate(4, 1.2))
            run.take([(a, b) for a, b in graph.by_identifier[transition] if run.active(a)])
            run.settle()
            stamps.append((len(run.recorder.rows), at))
        created = stamps[0][1]
        batch["people"].append(
            Person(pk=pk, environment=env, person_key=person.person_key, last_seq=0)
        )
        batch["instances"].append(
            FlowInstance(
                id=instance.id,
                person_id=pk,
                flow_id=flow_id,
                flow_identifier="onboarding",
                state=instance.state,
                created_at=created,
            )
        )
        batch["steps"].extend(
            StepInstance(
                id=s.id,
                instance_id=instance.id,
                identifier=s.identifier,
                name=s.name,
                position=s.position,
                state=s.state,
            )
            for s in steps
        )
        start = 0
        for end, when in stamps:
            for row in run.recorder.rows[start:end]:
                seq, entity, object_id, identifier, state, previous, flow, flow_inst, _ = row
                batch["log"].append(
                    StateChange(
                        person_id=pk,
                        seq=seq,
                        entity=entity,
                        object_id=object_id,
                        identifier=identifier,
                        state=state,
                        previous_state=previous,
                        flow_identifier=flow,
                        flow_instance_id=flow_inst,
                        occurred_at=when,
                    )
                )
            start = end
        batch["people"][-1].last_seq = len(run.recorder.rows)
        if len(batch["people"]) >= 5000:
            flush()
            print(f"  {i + 1} people", file=sys.stderr, flush=True)
    flush()
    if connection.vendor == "postgresql":
        from django.core.management.color import no_style

        with connection.cursor() as c:
            for sql in connection.ops.sequence_reset_sql(no_style(), [Person, StateChange]):
                c.execute(sql)
    print(f"built {people} people in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return env.pk


def timed(fn, runs: int) -> dict:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="keep the SQLite database here")
    args = parser.parse_args(argv)
    _django(args.data_dir)

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    from stepstream.http.dashboard import queries
    from stepstream.models import Flow

    env_id = build(args.people)
    user = User.objects.filter(username="bench").first() or User.objects.create_user(
        "bench", password=uuid.uuid4().hex, is_staff=True
    )
    client = Client()
    client.force_login(user)
    flow = Flow.objects.get(environment_id=env_id, identifier="onboarding")
    urls = {
        "flow_page": f"/dashboard/{env_id}/flows/onboarding/",
        "flows_page": f"/dashboard/{env_id}/flows/",
        "people_page": f"/dashboard/{env_id}/people/",
        "people_search": f"/dashboard/{env_id}/people/?q=user-04242",
        "person_page": f"/dashboard/{env_id}/people/user-000042@example.com/",
    }
    answer = {"database": connection.vendor, "people": args.people, "runs": args.runs}
    for name, url in urls.items():
        assert client.get(url).status_code == 200, url  # warm: caches, connection
        made: list[str] = []

        def count(execute, sql, *rest, made=made):
            made.append(sql)
            return execute(sql, *rest)

        with connection.execute_wrapper(count):
            client.get(url)
        answer[name] = {**timed(lambda url=url: client.get(url), args.runs), "queries": len(made)}
    answer["sql"] = {
        "active_counts (the live recount)": timed(
            lambda: queries.active_counts(flow.pk), args.runs
        ),
        "flow_analytics (counters, estimated medians)": timed(
            lambda: queries.flow_analytics(flow), args.runs
        ),
        "median_seconds (exact, from the log)": timed(
            lambda: queries.median_seconds(flow.pk), max(1, args.runs // 2)
        ),
    }
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
