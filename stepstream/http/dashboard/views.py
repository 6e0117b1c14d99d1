"""The dashboard's pages: server-rendered, for signed-in staff users only.

Every read goes through `queries` (counters and aggregates, a constant number of
queries per page); the writes are key rotation and revocation, through
`stepstream.trust.tenants`, each behind a confirmation page and a CSRF-checked POST,
and a flow's switches, archive and promotion (`flow_change`, CSRF-checked POSTs
through `stepstream.engine.authoring`, the signed-in user recorded as the actor).
No secret key is ever put in a page: a rotation from here makes a new
publishable key only (the secret key is made with the command line).
"""

import functools
import json
import threading
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.http import require_http_methods

from stepstream import engine
from stepstream.engine import audit, authoring
from stepstream.engine import flows as flow_versions
from stepstream.errors import StepstreamError
from stepstream.http.dashboard import diff, queries, throttle
from stepstream.http.dashboard import layout as graph_layout
from stepstream.http.dashboard import links as page_links
from stepstream.models import AuditEntry, Environment, Flow, FlowDraft
from stepstream.strictjson import validate_person_key
from stepstream.trust import tenants

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


class NotHere(Exception):
    """A page's object does not exist: a 404 rendered as a dashboard page."""

    def __init__(self, what: str, env=None):
        super().__init__(what)
        self.what = what
        self.env = env


class StaffLoginForm(AdminAuthenticationForm):
    """Django's admin sign-in form: a correct password of a non-staff user is refused too."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "That username and password do not match a staff account.",
    }


class RefusedLoginForm(StaffLoginForm):
    """The sign-in form of an attempt refused before its password is looked at."""

    def __init__(self, *args, refusal: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.refusal = refusal

    def clean(self):  # never Django's clean(): it would check the password
        raise ValidationError(self.refusal, code="throttled")


# Password checks running at once in this process: each holds one of the threads that
# serve REST and a core for about 0.25 s (PBKDF2), so a crowd of guessers cannot take
# them all; one more is answered 503 with Retry-After: 1, unchecked and uncounted.
PASSWORD_CHECKS_AT_ONCE = 2
GRAPH_TEMPLATE = "stepstream/dashboard/_graph.html"  # the flow page's drawing, and the builder's
_password_checks = threading.BoundedSemaphore(PASSWORD_CHECKS_AT_ONCE)


class LoginView(auth_views.LoginView):
    """Django's sign-in, throttled per username and per address (throttle.py)."""

    template_name = "stepstream/dashboard/login.html"
    authentication_form = StaffLoginForm
    redirect_authenticated_user = False

    def get_default_redirect_url(self):
        return reverse("dashboard:home")

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        refused = throttle.locked(request, username)  # a read: no count, no password check
        if refused is not None:
            retry_after = refused.retry_after
            assert retry_after is not None  # locked() gives refused attempts only
            return self._refuse(429, retry_after, _locked_out(retry_after))
        if not _password_checks.acquire(blocking=False):
            return self._refuse(
                503, 1, "The server is busy checking other sign-ins: try again in a moment."
            )
        try:
            self.attempt = throttle.count(request, username)  # before the password is checked
            if (retry_after := self.attempt.retry_after) is not None:  # refused
                return self._refuse(429, retry_after, _locked_out(retry_after))
            return super().post(request, *args, **kwargs)
        finally:
            _password_checks.release()

    def form_valid(self, form):
        throttle.succeeded(self.attempt)
        return super().form_valid(form)

    def form_invalid(self, form):
        throttle.failed(self.attempt, self.request)
        return super().form_invalid(form)

    def _refuse(self, status: int, retry_after: int, sentence: str):
        form = RefusedLoginForm(refusal=sentence, **self.get_form_kwargs())
        form.is_valid()  # its one error, the sentence
        response = self.render_to_response(self.get_context_data(form=form), status=status)
        response["Retry-After"] = str(retry_after)
        return response

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        response["Content-Security-Policy"] = CSP
        response["X-Frame-Options"] = "DENY"
        return response


def _locked_out(retry_after: int) -> str:
    return (
        "Too many failed sign-ins for this username or from this address: "
        f"try again in {throttle.wait_in_words(retry_after)}."
    )


class LogoutView(auth_views.LogoutView):
    next_page = "dashboard:login"


def staff_page(view):
    """Signed-in staff only (others go to the sign-in page), never cached, never framed."""

    @functools.wraps(view)
    @never_cache
    @xframe_options_deny
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            login = reverse("dashboard:login")
            return redirect(f"{login}?{urlencode({'next': _here(request)})}")
        try:
            response = view(request, *args, **kwargs)
        except NotHere as e:
            context = {"what": e.what, "env": e.env, "section": ""}
            response = render(request, "stepstream/dashboard/not_found.html", context, status=404)
        response["Content-Security-Policy"] = CSP
        response["Referrer-Policy"] = "same-origin"
        return response

    return wrapper


def _here(request) -> str:
    """This page's address, to come back to after signing in.

    `request.path` is decoded but for %2F and %25 (stepstream.http.convertors), so a
    key's "?", "#" or space is encoded again, as the page's link had it (links.py).
    """
    path = quote(request.path, safe="/%!$&'()*+,;=:@~")
    query = request.META.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _environment(env_id: int):
    env = queries.environment(env_id)
    if env is None:
        raise NotHere("There is no such environment.")
    return env


def _page(request, template: str, env, section: str, **context):
    context.update(env=env, section=section)
    return render(request, f"stepstream/dashboard/{template}", context)


@staff_page
def home(request):
    return render(
        request,
        "stepstream/dashboard/environments.html",
        {"projects": queries.environments(), "section": "environments"},
    )


@staff_page
def environment_home(request, env_id: int):
    _environment(env_id)
    return redirect("dashboard:flows", env_id=env_id)


@staff_page
def flows(request, env_id: int):
    from stepstream.engine import theme

    env = _environment(env_id)
    rows = queries.flows(env)
    archived = authoring.archived_identifiers(env)
    for row in rows:
        row["href"] = page_links.flow(env.pk, row["flow"].identifier)
    tokens = theme.describe(env.theme)["tokens"]
    defaults = theme.defaults()
    shown = [
        {
            "name": name,
            "value": value,
            "colour": theme.TOKENS[name][0] == "colour",
            "set": value != defaults[name],
        }
        for name, value in tokens.items()
    ]
    current = [r for r in rows if r["flow"].identifier not in archived]
    gone = [r for r in rows if r["flow"].identifier in archived]
    return _page(request, "flows.html", env, "flows", flows=current, archived=gone, theme=shown)


def _duration(seconds):
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _estimate(seconds) -> str:
    """Medians on the page come from a histogram (counters.py): within about 9 %.
    Under a millisecond (a final step completes as it is reached) is "< 1 ms", not
    "≈ 0 ms"."""
    if seconds is None:
        return "—"
    return "< 1 ms" if seconds < 0.001 else "≈ " + _duration(seconds)


def _median_shown(reached: int, completed: int, median: str) -> str:
    """What the funnel says for a step's median time: "not reached" when nobody has
    reached it (whatever durations an earlier instance left), "—" when nobody has
    completed it. live.js says the same as counts change."""
    if not reached:
        return "not reached"
    return median if completed else "—"


FUNNEL_ROW = 34
FUNNEL_LABEL = 200
FUNNEL_FONT = 13  # px, .funnel-label: a step's name, shortened at a word to fit
FUNNEL_BAR = 520


def _funnel(analytics: dict, names: dict) -> dict:
    """Bar geometry for the funnel chart (SVG drawn by the template)."""
    top = max([s["reached"] for s in analytics["steps"]] + [1])
    rows = []
    for i, step in enumerate(analytics["steps"]):
        reached, completed = step["reached"], step["completed"]
        name = names.get(step["identifier"]) or step["identifier"]
        median = _estimate(step["median_seconds_to_complete"])
        rows.append(
            {
                **step,
                "name": name,
                "label": graph_layout.shorten(name, FUNNEL_LABEL - 16, FUNNEL_FONT, bold=False),
                "y": i * FUNNEL_ROW,
                "reached_w": round(FUNNEL_BAR * reached / top, 1),
                "completed_w": round(FUNNEL_BAR * completed / top, 1),
                "rate": f"{int(100 * completed / reached + 0.5)}%" if reached else "—",
                "median": median,
                "median_shown": _median_shown(reached, completed, median),
            }
        )
    return {
        "rows": rows,
        "height": max(len(rows), 1) * FUNNEL_ROW,
        "label_w": FUNNEL_LABEL,
        "bar_w": FUNNEL_BAR,
        "numbers_x": FUNNEL_LABEL + FUNNEL_BAR + 12,
        "width": FUNNEL_LABEL + FUNNEL_BAR + 230,
        "top": top,
    }


def _graph(
    steps: list[tuple[str, str]],
    transitions: list[tuple[str, str, str, str]],
    per_step: dict[str, dict] | None = None,
) -> dict:
    """What _graph.html draws: layout.py's drawing, each step's text placed, and with
    `per_step` (a version's analytics) each step's count; the builder draws a draft."""
    drawn = graph_layout.layout(steps, transitions)
    counts = per_step or {}
    nodes = [
        {
            "node": node,
            "text_x": node.x + graph_layout.PAD,
            "lines": graph_layout.name_lines(node),
            "sub": graph_layout.subtitle(node),
            "sub_y": node.y + graph_layout.SUB_Y,
            "pill_x": node.x + graph_layout.PILL_X,
            "pill_y": node.y + graph_layout.PILL_Y,
            "count_x": node.x + graph_layout.PILL_X + graph_layout.PILL_W / 2,
            "active": counts.get(node.identifier, {}).get("active", 0),
            "reached": counts.get(node.identifier, {}).get("reached", 0),
            "cx": node.x + graph_layout.NODE_W / 2,
        }
        for node in drawn.nodes
    ]
    return {
        "drawing": drawn,
        "nodes": nodes,
        "node_w": graph_layout.NODE_W,
        "node_h": graph_layout.NODE_H,
        "pill_w": graph_layout.PILL_W,
        "pill_h": graph_layout.PILL_H,
    }


def _list(value: object, most: int) -> list:
    """A draft's list, as many items as a flow may have (the rest is not drawn)."""
    return value[:most] if isinstance(value, list) else []


def _draft_graph(definition: object) -> dict:
    """A draft drawn as far as it can be: steps with an identifier (the first of a repeated
    one), transitions between two of them; whatever else it holds waits for its fixing."""
    body = definition if isinstance(definition, dict) else {}
    steps: dict[str, str] = {}
    limits = settings.STEPSTREAM
    for step in _list(body.get("steps"), limits["MAX_FLOW_STEPS"]):
        if not isinstance(step, dict):
            continue
        sid, name = step.get("identifier"), step.get("name")
        if isinstance(sid, str) and sid.strip() and sid not in steps:
            steps[sid] = name if isinstance(name, str) else ""
    transitions = []
    for t in _list(body.get("transitions"), limits["MAX_FLOW_TRANSITIONS"]):
        if not isinstance(t, dict):
            continue
        tid, a, b, kind = (t.get(k) for k in ("identifier", "from", "to", "type"))
        if a in steps and b in steps:
            label = tid if isinstance(tid, str) else ""
            transitions.append((label, a, b, "automatic" if kind == "automatic" else "manual"))
    return _graph(list(steps.items()), transitions)


@staff_page
def flow(request, env_id: int, identifier: str | None = None):
    env = _environment(env_id)
    if identifier is None:  # flow/?flow=..: "." and ".." (links.py)
        identifier = request.GET.get("flow", "")
    version = request.GET.get("version")
    version = int(version) if version and version.isdigit() else None
    flow, versions = queries.flow_version(env, identifier, version)
    if flow is None:
        raise NotHere(f"No flow '{identifier}' in {env.identifier}.", env)
    steps = list(flow.steps.all())
    transitions = list(flow.transitions.all())
    analytics = queries.flow_analytics(flow)
    graph = _graph(
        [(s.identifier, s.name) for s in steps],
        [(t.identifier, t.from_step, t.to_step, t.type) for t in transitions],
        {s["identifier"]: s for s in analytics["steps"]},
    )
    live = {
        "watch": "flow",
        "environment": env.pk,
        "flow": flow.identifier,
        "version": flow.version,
    }
    return _page(
        request,
        "flow.html",
        env,
        "flows",
        flow=flow,
        versions=[(v, page_links.flow(env.pk, flow.identifier, v)) for v in versions],
        latest=versions[-1],
        graph=graph,
        analytics=analytics,
        funnel=_funnel(analytics, {s.identifier: s.name for s in steps}),
        content={s.identifier: s.content["type"] for s in steps if s.content},
        transitions=transitions,
        live=live,
        **_authoring(request, env, flow, versions),
    )


def _edit_href(env, identifier: str) -> str | None:
    """The builder's page for this flow (none for "." and "..", which no path keeps)."""
    link = page_links.flow(env.pk, identifier)
    return f"{link}edit/" if link.endswith("/") else None


def _local_input(moment) -> str:
    """A datetime-local input's value, in UTC (the page says so)."""
    return moment.strftime("%Y-%m-%dT%H:%M") if moment is not None else ""


def _authoring(request, env, flow, numbers: list[int]) -> dict:
    """The flow page's versions, differences, switches, promotion targets and audit."""
    rows = list(
        Flow.objects.filter(environment=env, identifier=flow.identifier).order_by("-version")[
            : authoring.MAX_VERSIONS_LISTED
        ]
    )
    by_number = {f.version: f for f in rows}
    base = request.GET.get("compare", "")
    base_number = int(base) if base.isdigit() and int(base) in by_number else None
    if base_number is None and flow.version - 1 in by_number:
        base_number = flow.version - 1
    differences = None
    if base_number is not None and base_number != flow.version:
        differences = diff.between(
            flow_versions.describe(by_number[base_number]), flow_versions.describe(flow)
        )
    switch = authoring.switch_of(env, flow.identifier)
    targets = list(
        Environment.objects.filter(project_id=env.project_id)
        .exclude(pk=env.pk)
        .order_by("identifier")
        .values_list("identifier", flat=True)
    )
    return {
        "version_rows": [
            {
                "meta": authoring.version_meta(f),
                "href": page_links.flow(env.pk, f.identifier, f.version),
            }
            for f in rows
        ],
        "compare_with": base_number,
        "differences": differences,
        "switch": switch,
        "starts_at_value": _local_input(switch.starts_at),
        "ends_at_value": _local_input(switch.ends_at),
        "targets": targets,
        "flow_audit": [_shown(e) for e in audit.for_object(env.pk, f"flow:{flow.identifier}", 50)],
        "edit_href": _edit_href(env, flow.identifier),
    }


@staff_page
@require_http_methods(["POST"])
def flow_change(request, env_id: int):
    """A flow's switches, archive, promotion or a start for a person, from its page
    (CSRF-checked by Django)."""
    env = _environment(env_id)
    identifier = request.POST.get("flow", "")
    op = request.POST.get("op", "")
    actor = request.user.get_username()
    back = page_links.flow(env.pk, identifier)
    try:
        if op == "switch":
            body = {
                "enabled": request.POST.get("enabled") == "on",
                "starts_at": _utc_input(request.POST.get("starts_at", "")),
                "ends_at": _utc_input(request.POST.get("ends_at", "")),
            }
            authoring.patch_switches(env, identifier, body, actor)
            messages.success(request, "Switches saved; they apply to the next start.")
        elif op in ("archive", "unarchive"):
            authoring.set_archived(env, identifier, op == "archive", actor)
            messages.success(request, f"Flow {identifier} is {op}d.")
        elif op == "promote":
            number = request.POST.get("version", "")
            to = request.POST.get("to", "")
            promoted = authoring.promote(
                env, identifier, int(number) if number.isdigit() else 0, {"to": to}, actor
            )
            messages.success(
                request, f"Version {number} is now version {promoted['version']} in {to}."
            )
            back = page_links.flow(env.pk, identifier, int(number))
        elif op == "start":  # the same start as REST's POST /people/{key}/flows
            key = validate_person_key(request.POST.get("person_key", "").strip())
            engine.do_start_flow(env, key, identifier, via="admin")
            messages.success(request, f"Flow {identifier} started for {key}.")
            back = page_links.person(env.pk, key)
        else:
            messages.error(request, "Unknown change.")
    except StepstreamError as e:
        messages.error(request, " ".join(e.messages))
    return redirect(back)


def _utc_input(value: str) -> str | None:
    """A datetime-local value (read as UTC) as ISO 8601; empty: none."""
    value = value.strip()[:40]
    return f"{value}:00Z" if len(value) == 16 else (f"{value}Z" if value else None)


def _shown(entry: dict) -> dict:
    """An audit entry for a page: the time to the second, details as JSON values."""
    details = "; ".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in entry["details"].items()
    )
    return {**entry, "at": entry["at"][:19].replace("T", " "), "details_text": details}


def _builder_start(env, identifier: str | None) -> tuple[dict, str | None]:
    """What the builder opens with: the flow's draft (and its ETag, which each save sends
    back), else its latest version, else nothing (a first save expects no draft)."""
    if identifier is None:
        return {"identifier": "", "steps": [], "transitions": []}, None
    draft = FlowDraft.objects.filter(environment=env, identifier=identifier).first()
    if draft is not None:
        return draft.body, authoring.etag_of(draft)
    latest = Flow.objects.filter(environment=env, identifier=identifier).order_by("-version")
    found = latest.first()
    if found is None:
        raise NotHere(f"No flow '{identifier}' in {env.identifier}.", env)
    return authoring.as_definition(flow_versions.describe(found)), None


@staff_page
def builder(request, env_id: int, identifier: str | None = None):
    """The builder: a draft edited without JSON (static/dashboard/builder.js does the editing)."""
    from stepstream.engine import theme

    env = _environment(env_id)
    start, etag = _builder_start(env, identifier)
    config = {
        "environment": env.pk,
        "flow": identifier,
        "draft": start,
        "etag": etag,
        "api": reverse("dashboard:builder_api", args=[env.pk]),
        "flows": reverse("dashboard:flows", args=[env.pk]),
        "theme": theme.describe(env.theme)["tokens"],  # the live preview's colours
    }
    return _page(
        request,
        "builder.html",
        env,
        "flows",
        builder=config,
        editing=identifier,
        graph=_draft_graph(start),
    )


def _builder_check(body: dict) -> authoring.DraftCheck:
    """The draft the builder last read or saved (its ETag), or none: the page started from
    a version or from nothing, so a draft someone else saved meanwhile is not overwritten."""
    etag = body.get("etag")
    if isinstance(etag, str) and etag:
        return authoring.draft_check(etag, None)
    return authoring.DraftCheck(no_draft=True)


def _draft_changed(e: authoring.DraftChanged) -> str:
    """The builder's sentence for a 409: who saved the draft since this page read it."""
    if e.revision is None:
        return (
            "This flow's draft was published or deleted after you opened it. Nothing was "
            "saved: reload to edit the flow as it is now, then make your change again."
        )
    at = f" at {e.saved_at:%H:%M:%S} UTC" if e.saved_at else ""
    return (
        f"{e.saved_by or 'Someone'} saved this draft{at} after you opened it; it is at "
        f"revision {e.revision} now. Nothing was saved: reload the latest draft, then make "
        "your change again."
    )


@staff_page
@require_http_methods(["POST"])
def builder_api(request, env_id: int):
    """The builder's calls (JSON, CSRF-checked): check a condition, save or publish a draft."""
    env = _environment(env_id)
    try:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return JsonResponse({"errors": ["The body must be a JSON object."]}, status=400)
    op = body.get("op")
    actor = request.user.get_username()
    identifier = None
    try:
        if op == "check":
            return JsonResponse(authoring.check_condition(body))
        if op == "graph":  # the flow page's drawing of the draft as it is being edited
            context = {"graph": _draft_graph(body.get("draft")), "counts": False}
            return JsonResponse({"html": render_to_string(GRAPH_TEMPLATE, context)})
        definition = body.get("draft")
        identifier = definition.get("identifier") if isinstance(definition, dict) else None
        if not isinstance(identifier, str) or not identifier.strip():
            return JsonResponse(
                {"problems": ["identifier: the flow needs an identifier."]}, status=400
            )
        if op not in ("save", "publish"):
            wrong = ["op must be check, graph, save or publish."]
            return JsonResponse({"errors": wrong}, status=400)
        saved = authoring.put_draft(env, identifier, definition, actor, _builder_check(body))
        if op == "save" or saved.body["problems"]:
            status = 400 if op == "publish" else 200
            return JsonResponse({**saved.body, "etag": saved.etag}, status=status)
        flow = authoring.publish_draft(env, identifier, actor, authoring.DraftCheck((saved.etag,)))
        href = page_links.flow(env.pk, identifier)
        return JsonResponse({"version": flow["version"], "href": href}, status=201)
    except authoring.DraftChanged as e:
        reload = _edit_href(env, identifier) if identifier else None
        return JsonResponse({"conflict": _draft_changed(e), "reload": reload}, status=409)
    except StepstreamError as e:
        return JsonResponse({"problems": e.messages}, status=e.status)


@staff_page
def audit_page(request, env_id: int):
    env = _environment(env_id)
    before = request.GET.get("before", "")
    rows = AuditEntry.objects.filter(environment_id=env.pk)
    if before.isdigit():
        rows = rows.filter(id__lt=int(before))
    entries = list(rows.order_by("-id")[:100])
    older = entries[-1].pk if len(entries) == 100 else None
    return _page(
        request,
        "audit.html",
        env,
        "audit",
        entries=[_shown(audit.describe(e)) for e in entries],
        older=older,
    )


@staff_page
def people(request, env_id: int):
    env = _environment(env_id)
    q = request.GET.get("q", "").strip()[:255]
    paginator = Paginator(queries.people(env, q), queries.PEOPLE_PER_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    counts = queries.flow_counts(p.pk for p in page.object_list)
    for p in page.object_list:
        p.n_flows, p.n_active = counts.get(p.pk, (0, 0))
        p.href = page_links.person(env.pk, p.person_key)
    return _page(request, "people.html", env, "people", page=page, q=q, numbers=page_numbers(page))


@staff_page
def person(request, env_id: int, person_key: str | None = None):
    env = _environment(env_id)
    if person_key is None:  # person/?key=..: "." and ".." (links.py)
        person_key = request.GET.get("key", "")
    p = queries.person(env, person_key)
    if p is None:
        raise NotHere("No person with that key in this environment.", env)
    instances = queries.person_flows(p)
    for i in instances:
        # a link for the template, not a field of the model
        i.href = page_links.flow(env.pk, i.flow_identifier, i.flow.version)  # type: ignore[attr-defined]
    timeline = queries.timeline(p)
    for event in timeline:
        event["cause_text"] = cause_text(event.get("cause"))
    why, pending = _why(env, p)
    live = {
        "watch": "person",
        "environment": env.pk,
        "person_key": p.person_key,
        "since_seq": timeline[0]["seq"] if timeline else 0,
    }
    return _page(
        request,
        "person.html",
        env,
        "people",
        person=p,
        instances=instances,
        timeline=timeline,
        tracked=queries.tracked_events(p),
        data=json.dumps(p.data, indent=2, ensure_ascii=False) if p.data else "",
        truncated=len(timeline) >= queries.TIMELINE_LIMIT,
        live=live,
        why=why,
        pending=pending,
    )


MAX_EXPLAINED = 50  # flows explained on a person's page


def _why(env, p) -> tuple[list[dict], list]:
    """Why or why not, for each flow the person has or could start (GET .../explain), and
    their pending timers and deferred starts."""
    from stepstream.engine import explain, rules
    from stepstream.engine.flows import graph

    starters = rules.env_rules(env.pk, env.rules_version, graph).starters
    found = []
    explainer = explain.Explainer(env, p.person_key, p)
    names = dict.fromkeys([f for f, _ in starters] + list(explainer.instances))
    for flow in list(names)[:MAX_EXPLAINED]:
        e = explainer.explain(flow)
        if e["instance"] is not None:
            e["verdict"] = f"has it ({e['instance']['state']})"
        elif e["deferred"]:
            e["verdict"] = "deferred by a limit"
        elif e["start_when"] is None:
            e["verdict"] = "starts only when called"
        elif e["start_when"]["value"] is True:
            e["verdict"] = "its start condition is true"
        else:
            e["verdict"] = "not started: its start condition is not true"
        found.append(e)
    return found, explainer.pending


@staff_page
def segments(request, env_id: int):
    env = _environment(env_id)
    counted = queries.segment_list(env)
    scanned = counted["scanned"]
    for row in counted["segments"]:
        row["bar"] = round(100 * row["size"] / scanned) if scanned else 0  # of those scanned
    return _page(
        request,
        "segments.html",
        env,
        "segments",
        segments=counted["segments"],
        scanned=scanned,
        people=counted["people"],
        exact=scanned >= counted["people"],
    )


@staff_page
def webhooks(request, env_id: int):
    env = _environment(env_id)
    return _page(request, "webhooks.html", env, "webhooks", webhooks=queries.webhooks(env))


@staff_page
def keys(request, env_id: int):
    env = _environment(env_id)
    return _page(request, "keys.html", env, "keys", keys=queries.keys(env))


@staff_page
@require_http_methods(["GET", "POST"])
def rotate_key(request, env_id: int):
    """GET: the confirmation; POST: a new publishable key, shown once on this page."""
    env = _environment(env_id)
    if request.method == "GET":
        return _page(request, "key_confirm.html", env, "keys", action="rotate")
    answer = tenants.rotate(env, ["publishable"], request.user.get_username())
    return _page(
        request,
        "key_rotated.html",
        env,
        "keys",
        new_key=answer["publishable_key"],
        old_ids=answer["old_key_ids"],
    )


@staff_page
@require_http_methods(["GET", "POST"])
def revoke_key(request, env_id: int, key_id: int):
    env = _environment(env_id)
    row = env.keys.filter(pk=key_id).first()
    if row is None:
        raise NotHere("No such key in this environment.", env)
    if request.method == "GET":
        return _page(request, "key_confirm.html", env, "keys", action="revoke", key=row)
    try:
        tenants.revoke_key(env, key_id, request.user.get_username())
    except StepstreamError as e:
        messages.error(request, " ".join(e.messages))
    else:
        messages.success(request, f"Key {row.hint}… is revoked; clients using it are refused.")
    return redirect("dashboard:keys", env_id=env.pk)


def cause_text(cause) -> str:
    """Why a change happened, in words (the same wording as live.js's causeText)."""
    if not isinstance(cause, dict):
        return ""
    kind = cause.get("kind")
    if kind == "call":
        text = f"called via {cause['via']}" if cause.get("via") else "called"
    elif kind == "automatic":
        transition = cause.get("transition")
        text = f"automatic transition {transition}" if transition else "automatic transition"
    elif kind == "start_when":
        text = "started by its start condition"
        if cause.get("deferred_by"):
            text += f", deferred by limit {cause['deferred_by']}"
    elif kind == "timer":
        text = f"timer of {cause.get('transition')}, due {cause.get('due_at')}"
    else:
        text = str(kind or "")
    if cause.get("event"):
        text += f", after event {cause['event']}"
    if cause.get("data"):
        text += ", after a data change"
    if cause.get("page"):
        text += ", after a page view"
    return text


def page_numbers(page) -> list:
    """Page links around the current one, with gaps (None) for the rest."""
    last = page.paginator.num_pages
    wanted = {1, last, *range(max(1, page.number - 2), min(last, page.number + 2) + 1)}
    numbers: list[int | None] = []
    previous = 0
    for n in sorted(wanted):
        if n - previous > 1:
            numbers.append(None)
        numbers.append(n)
        previous = n
    return numbers
