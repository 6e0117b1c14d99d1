"""REST views: each parses its input, calls the engine or a domain module, renders."""

import logging

import orjson
from django.http import HttpResponse
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from stepstream import engine
from stepstream.engine import authoring, flows, limits, log, people, segments
from stepstream.errors import Invalid
from stepstream.http.health import RUNTIME_KEY
from stepstream.models import Person
from stepstream.strictjson import check, validate_person_key


def person_key(key: str) -> str:
    """The route's `<seg:key>`, already decoded by stepstream.http.convertors."""
    return validate_person_key(key)


def _body(request: Request) -> dict:
    return _object(request.data)


def _json_body(request: Request) -> dict:
    """The JSON object a call requires; no body at all (which DRF reads as {}) is a 400."""
    data = request.data
    if request.stream is None:  # DRF had nothing to read
        raise Invalid("The request body must be a JSON object, sent as application/json.")
    return _object(data)


def _object(data) -> dict:
    if not isinstance(data, dict):
        raise Invalid("The request body must be a JSON object.")
    return data


def _field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{name} is required and must be a non-empty string.")
    check(value, name)
    return value


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def health(request):
    from stepstream.http.health import health_report

    return Response(health_report(request.META.get(RUNTIME_KEY)))


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def ready(request):
    """Readiness: 200 when the database (and Redis, if configured) answer, else 503."""
    from stepstream.observability import readiness

    ok, report = readiness()
    response = Response(
        {"status": "ready" if ok else "unavailable", **report}, status=200 if ok else 503
    )
    if not ok:
        # a probe answered as designed, not a server error: one WARNING, not
        # django.request's ERROR line with its traceback-like noise
        logging.getLogger("stepstream.ready").warning("not ready: %s", report)
        # read by django.utils.log.log_response, which the stubs do not declare
        response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@api_view(["GET", "PUT"])
def person_schema(request):
    env = request.auth
    if request.method == "PUT":
        return Response(people.set_schema(env, request.data))
    return Response(env.person_schema or {})


def _person_data(request: Request) -> dict:
    """The `data` object of `PUT /people/{key}`: required, so that a body of bare fields
    (`{"plan": "pro"}`) is refused rather than stored as an empty person."""
    body = _body(request)
    data = body.get("data")
    if isinstance(data, dict):
        return data
    if "data" in body:
        raise Invalid("data must be a JSON object.")
    fields = ", ".join(str(name)[:40] for name in sorted(body)[:5])
    given = f" (it has {fields})" if fields else ""
    raise Invalid(
        f'The request body must have a "data" object{given}: send {{"data": {{...}}}}, '
        'for example {"data": {"plan": "pro"}}; {"data": {}} for a person with no data.'
    )


@api_view(["GET", "PUT", "DELETE"])
def person(request, key):
    env, key = request.auth, person_key(key)
    if request.method == "PUT":
        described, created = engine.do_put_person(env, key, _person_data(request), via="rest")
        return Response(described, status=201 if created else 200)
    if request.method == "DELETE":
        people.delete(env, key)
        return Response(status=204)
    return Response(people.describe_by_key(env, key))


def actor(request: Request) -> str:
    """Who makes a change with a secret key, for the audit: `key:` and its first 8 characters."""
    from stepstream.engine import audit

    _, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return audit.key_actor(key.strip())


@api_view(["GET", "POST"])
def flow_list(request):
    if request.method == "POST":
        published = flows.publish(request.auth, request.data, actor(request))
        return Response(authoring.answer(request.auth, published), status=201)
    archived = authoring.archived_identifiers(request.auth)
    return Response([f for f in flows.list_latest(request.auth) if f["identifier"] not in archived])


@api_view(["GET", "PATCH", "DELETE"])
def flow_detail(request, identifier):
    env = request.auth
    if request.method == "PATCH":
        body = _json_body(request)
        return Response(authoring.patch_switches(env, identifier, body, actor(request)))
    if request.method == "DELETE":
        authoring.set_archived(env, identifier, True, actor(request))
        return Response(status=204)
    if request.query_params.get("version"):
        number = _int_param(request, "version", 1, 1, 2**31 - 1)
        return Response(authoring.describe_full(env, flows.version(env, identifier, number)))
    return Response(authoring.describe_full(env, flows.latest(env, identifier)))


@api_view(["POST"])
def flow_unarchive(request, identifier):
    return Response(authoring.set_archived(request.auth, identifier, False, actor(request)))


@api_view(["GET"])
def flow_versions(request, identifier):
    return Response(authoring.versions(request.auth, identifier))


@api_view(["POST"])
def flow_promote(request, identifier, number):
    promoted = authoring.promote(
        request.auth, identifier, int(number), _json_body(request), actor(request)
    )
    return Response(promoted, status=201)


def _draft_check(request: Request) -> authoring.DraftCheck:
    return authoring.draft_check(
        request.headers.get("If-Match"), request.headers.get("If-None-Match")
    )


def _draft_response(answer: authoring.DraftAnswer) -> Response:
    return Response(answer.body, headers={"ETag": answer.etag})


@api_view(["GET", "PUT", "DELETE"])
def flow_draft(request, identifier):
    env = request.auth
    if request.method == "PUT":
        check = _draft_check(request)
        body = _json_body(request)
        return _draft_response(authoring.put_draft(env, identifier, body, actor(request), check))
    if request.method == "DELETE":
        authoring.delete_draft(env, identifier)
        return Response(status=204)
    return _draft_response(authoring.get_draft(env, identifier))


@api_view(["POST"])
def flow_draft_publish(request, identifier):
    published = authoring.publish_draft(
        request.auth, identifier, actor(request), _draft_check(request)
    )
    return Response(published, status=201)


@api_view(["POST"])
def condition_check(request):
    return Response(authoring.check_condition(_json_body(request)))


@api_view(["GET"])
def audit_log(request):
    from stepstream.engine import audit

    limit = _int_param(request, "limit", audit.DEFAULT_LIMIT, 1, audit.MAX_LIMIT)
    return Response(audit.page(request.auth.pk, request.query_params.get("after"), limit))


@api_view(["GET", "POST"])
def person_flows(request, key):
    env, key = request.auth, person_key(key)
    if request.method == "POST":
        flow = _field(_body(request), "flow")
        return Response(engine.do_start_flow(env, key, flow, via="rest"), status=201)
    return Response(engine.snapshot(env, key)["flows"])


def transition_of(data) -> str:
    """The transition a call's decoded body names (stepstream.http.fast reads it the same way)."""
    return _field(_object(data), "transition")


@api_view(["POST"])
def person_transition(request, key, flow):
    transition = transition_of(request.data)
    return Response(
        engine.do_transition(request.auth, person_key(key), flow, transition, via="rest")
    )


@api_view(["POST"])
def person_complete_step(request, key, flow, step):
    """Completes an active final step that has content (docs/content.md)."""
    return Response(engine.do_complete_step(request.auth, person_key(key), flow, step, via="rest"))


@api_view(["GET", "PUT"])
def theme_detail(request):
    """The environment's theme tokens (docs/clients.md, "Theme"); defaults where unset."""
    from stepstream.engine import theme

    if request.method == "PUT":
        return Response(theme.put(request.auth, request.data, actor(request)))
    return Response(theme.get(request.auth))


@api_view(["POST"])
def person_flow_action(request, key, flow, action):
    return Response(engine.do_flow_action(request.auth, person_key(key), flow, action, via="rest"))


def _int_param(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer.") from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}.")
    return value


@api_view(["GET"])
def person_events(request, key):
    since = _int_param(request, "since_seq", 0, 0, 2**62)
    limit = _int_param(request, "limit", 1000, 1, 10000)
    found: Person = people.get(request.auth, person_key(key))
    return Response(log.read_since(found, since, limit))


# --- rules (docs/rules.md) ----------------------------------------------------


@api_view(["POST"])
def person_track(request, key):
    body = _body(request)
    return Response(
        engine.do_track(
            request.auth, person_key(key), body.get("event"), body.get("properties"), via="rest"
        )
    )


@api_view(["POST"])
def person_restart(request, key, flow):
    return Response(engine.do_restart(request.auth, person_key(key), flow, via="rest"))


@api_view(["GET"])
def segment_list(request):
    return Response(segments.list_all(request.auth))


@api_view(["GET", "PUT", "DELETE"])
def segment_detail(request, identifier):
    env = request.auth
    if request.method == "PUT":
        described, created = segments.put(env, identifier, request.data, actor(request))
        return Response(described, status=201 if created else 200)
    if request.method == "DELETE":
        segments.delete(env, identifier, actor(request))
        return Response(status=204)
    return Response(segments.describe(segments.get(env, identifier)))


@api_view(["GET"])
def person_explain(request, key):
    from stepstream.engine import explain

    flow = request.query_params.get("flow")
    if not flow:
        raise Invalid("flow is required: ?flow=IDENTIFIER, the flow to explain.")
    check(flow, "flow")
    return Response(explain.explain(request.auth, person_key(key), flow))


@api_view(["GET"])
def limit_list(request):
    return Response(limits.list_all(request.auth))


@api_view(["GET", "PUT", "DELETE"])
def limit_detail(request, identifier):
    env = request.auth
    if request.method == "PUT":
        described, created = limits.put(env, identifier, request.data, actor(request))
        return Response(described, status=201 if created else 200)
    if request.method == "DELETE":
        limits.delete(env, identifier, actor(request))
        return Response(status=204)
    return Response(limits.describe(limits.get(env, identifier)))


@api_view(["GET"])
def segment_people(request, identifier):
    limit = _int_param(request, "limit", 100, 1, 1000)
    after = request.query_params.get("after") or None
    return Response(segments.people_page(request.auth, identifier, limit, after))


@api_view(["GET"])
def change_feed(request):
    """The environment's change feed (stepstream/engine/feed.py): each change once, in order."""
    from stepstream.engine import feed

    limit = _int_param(request, "limit", feed.DEFAULT_LIMIT, 1, feed.MAX_LIMIT)
    page = feed.page(request.auth.pk, request.query_params.get("after"), limit)
    # orjson: DRF's renderer took longer than reading the page (docs/performance-history.md)
    return HttpResponse(orjson.dumps(page), content_type="application/json")


@api_view(["GET", "POST"])
def webhook_list(request):
    from stepstream.delivery import webhooks

    if request.method == "POST":
        return Response(webhooks.create(request.auth, request.data, actor(request)), status=201)
    return Response(webhooks.listing(request.auth))


@api_view(["GET", "DELETE"])
def webhook_detail(request, hook_id):
    from stepstream.delivery import webhooks

    if request.method == "DELETE":
        webhooks.delete(request.auth, hook_id, actor(request))
        return Response(status=204)
    return Response(webhooks.describe(webhooks.get(request.auth, hook_id)))


@api_view(["POST"])
def webhook_enable(request, hook_id):
    from stepstream.delivery import webhooks

    return Response(webhooks.enable(request.auth, hook_id, actor(request)))


@api_view(["GET"])
def webhook_deliveries(request, hook_id):
    from stepstream.delivery import webhooks

    limit = _int_param(request, "limit", 100, 1, webhooks.MAX_DELIVERIES_LIMIT)
    return Response(webhooks.deliveries(request.auth, hook_id, limit))


@api_view(["GET"])
def flow_analytics(request, identifier):
    from stepstream.engine import analytics

    version = None
    if request.query_params.get("version"):
        version = _int_param(request, "version", 1, 1, 2**31 - 1)
    return Response(analytics.report(request.auth, identifier, version))
