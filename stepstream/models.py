"""The domain model: tenants and keys, people, flow versions, instances, the log.

States are only ever written by `stepstream.engine`; everything here is data.
"""

import uuid

from django.db import models

FLOW_STATES = ["active", "inactive", "completed", "exited"]
STEP_STATES = ["inactive", "active", "completed"]
ENVIRONMENTS = ["development", "production"]


class Installation(models.Model):
    """One row: a digest proving which STEPSTREAM_SECRET_KEY this database was set up with.

    Keys are stored as HMAC digests keyed with that secret; a server started
    with another one would answer 401 to every key without saying why.
    """

    secret_check = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)


class TransactionId(models.Func):
    """The current top-level transaction id on PostgreSQL; 0 elsewhere (one writer at a time)."""

    output_field = models.BigIntegerField()

    def as_sql(self, compiler, connection, function=None, template=None, arg_joiner=None, **extra):
        if connection.vendor == "postgresql":
            return "(pg_current_xact_id()::text::bigint)", []
        return "0", []


class Project(models.Model):
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.name} (#{self.pk})"


class Environment(models.Model):
    VERIFICATION_MODES = [("off", "off"), ("rollout", "rollout"), ("enforce", "enforce")]

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    identifier = models.CharField(max_length=50)
    person_schema = models.JSONField(default=dict, blank=True)
    verification_mode = models.CharField(max_length=10, choices=VERIFICATION_MODES, default="off")
    identity_secret = models.CharField(max_length=200, blank=True, default="")
    signed_requests = models.BigIntegerField(default=0)
    unsigned_requests = models.BigIntegerField(default=0)
    # browser origins allowed to open a WebSocket with this environment's key; [] = any
    allowed_origins = models.JSONField(default=list, blank=True)
    # grows with every flow publish and segment change: people settled against an older
    # value get every condition evaluated at their next write (docs/architecture.md, Rules)
    rules_version = models.BigIntegerField(default=0, editable=False)
    # the content's look: {token: value} as PUT /theme gave (stepstream/engine/theme.py)
    theme = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "identifier"], name="env_unique_per_project")
        ]

    def __str__(self):
        return f"{self.project.name} / {self.identifier}"


class ApiKey(models.Model):
    """A key is never stored: only its keyed digest, which is what lookups use."""

    KINDS = [("secret", "secret"), ("publishable", "publishable")]

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="keys")
    kind = models.CharField(max_length=12, choices=KINDS)
    digest = models.CharField(max_length=64, unique=True)
    # the key's first characters ("pk_Ab3x"): enough to tell keys apart, useless to an attacker
    hint = models.CharField(max_length=12, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.kind} key #{self.pk} of {self.environment}"


class Person(models.Model):
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="people")
    person_key = models.CharField(max_length=255)
    data = models.JSONField(default=dict, blank=True)
    last_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # the Environment.rules_version this person's conditions were last all evaluated under
    rules_version = models.BigIntegerField(default=0, editable=False)

    class Meta:
        verbose_name_plural = "people"
        constraints = [
            models.UniqueConstraint(fields=["environment", "person_key"], name="person_key_unique")
        ]

    def __str__(self):
        return self.person_key


class Flow(models.Model):
    """One published version of a flow; versions never change once published."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="flows")
    identifier = models.CharField(max_length=255)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    start_when = models.TextField(blank=True, default="")  # CEL; "" = never starts by itself
    uses_segments = models.JSONField(default=list, blank=True)  # named by any of its conditions
    # who published it: "key:" and a secret key's first 8 characters, or a dashboard username
    published_by = models.CharField(max_length=160, blank=True, default="")
    # sha256 of the version's canonical content (engine.flows.content_hash); "" until computed
    hash = models.CharField(max_length=64, blank=True, default="")
    # several start_when true at one write start higher first (docs/rules.md, "Priority")
    priority = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "identifier", "version"], name="flow_version_unique"
            )
        ]
        ordering = ["identifier", "version"]

    def __str__(self):
        return f"{self.identifier} v{self.version}"


class Step(models.Model):
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="steps")
    identifier = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True, default="")
    properties = models.JSONField(default=dict, blank=True)
    position = models.PositiveIntegerField()
    # what the SDK shows while the step is active (stepstream/engine/content.py); null: nothing
    content = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["flow", "position"]

    def __str__(self):
        return self.identifier


class Transition(models.Model):
    TYPES = [("manual", "manual"), ("automatic", "automatic")]

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="transitions")
    identifier = models.CharField(max_length=255)
    from_step = models.CharField(max_length=255)
    to_step = models.CharField(max_length=255)
    type = models.CharField(max_length=10, choices=TYPES, default="manual")
    position = models.PositiveIntegerField()
    condition = models.TextField(blank=True, default="")  # CEL; "" = always true
    after = models.CharField(max_length=20, blank=True, default="")  # a duration; "" = no timer

    class Meta:
        ordering = ["flow", "position"]

    def __str__(self):
        return f"{self.identifier}: {self.from_step} -> {self.to_step}"


class FlowInstance(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="flow_instances")
    flow = models.ForeignKey(Flow, on_delete=models.PROTECT, related_name="instances")
    flow_identifier = models.CharField(max_length=255)
    state = models.CharField(max_length=10, choices=[(s, s) for s in FLOW_STATES])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["person", "flow_identifier"], name="one_instance_per_flow"
            )
        ]
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.flow_identifier} for {self.person_id}"


class StepInstance(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    instance = models.ForeignKey(FlowInstance, on_delete=models.CASCADE, related_name="steps")
    identifier = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True, default="")
    position = models.PositiveIntegerField()
    state = models.CharField(max_length=10, choices=[(s, s) for s in STEP_STATES])
    # For analytics (stepstream/engine/analytics.py), written by the engine with the state:
    # the instance's flow version (copied, so a version's completions are found through
    # one index without a join), when the step first became active, and the seconds from
    # then to its first completion (set once; null until it completes).
    flow = models.ForeignKey(
        Flow,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        null=True,
        related_name="+",
    )
    activated_at = models.DateTimeField(null=True)
    seconds_to_complete = models.FloatField(null=True)
    # when it last became active (a manual cycle reactivates it): a timer written again on
    # resume is due at this plus `after` (docs/rules.md, "Timers"); null means activated_at
    last_activated_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["instance", "position"]
        indexes = [
            # only completed step instances: a version's completions per step, in
            # duration order (counts and exact medians); costs nothing before completion
            models.Index(
                fields=["flow", "identifier", "seconds_to_complete"],
                name="step_completions",
                condition=models.Q(seconds_to_complete__isnull=False),
            )
        ]

    def __str__(self):
        return self.identifier


class StateChange(models.Model):
    """The state-change log: one row per change, written with the change itself."""

    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="state_changes")
    seq = models.BigIntegerField()
    entity = models.CharField(max_length=4)
    object_id = models.UUIDField()
    identifier = models.CharField(max_length=255)
    state = models.CharField(max_length=10)
    previous_state = models.CharField(max_length=10)
    flow_identifier = models.CharField(max_length=255)
    flow_instance_id = models.UUIDField()
    occurred_at = models.DateTimeField()
    cause = models.JSONField(default=dict, blank=True)  # why it happened (docs/rules.md)
    # The writing transaction's id on PostgreSQL (0 on SQLite), set by the
    # database itself: the change feed's commit-order key (stepstream/engine/feed.py).
    xid = models.BigIntegerField(db_default=TransactionId(), editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["person", "seq"], name="seq_unique_per_person")
        ]
        ordering = ["person", "seq"]

    def __str__(self):
        return f"#{self.seq} {self.entity} {self.identifier}: {self.previous_state} -> {self.state}"


# Rules (docs/rules.md): tracked events, segments; conditions live on Flow and Transition.


class TrackedEvent(models.Model):
    """What a person has done, kept as one aggregate per person and event name."""

    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="tracked_events")
    name = models.CharField(max_length=255)
    count = models.BigIntegerField(default=0)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    last_properties = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["person", "name"], name="tracked_event_unique")
        ]
        ordering = ["person", "name"]

    def __str__(self):
        return f"{self.name} x{self.count}"


class Segment(models.Model):
    """A named condition; `version` grows with each replacement (compiled programs cache by it)."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="segments")
    identifier = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True, default="")
    condition = models.TextField()
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "identifier"], name="segment_unique")
        ]
        ordering = ["identifier"]

    def __str__(self):
        return self.identifier


class Webhook(models.Model):
    """An endpoint that receives every state change of its environment (delivery/webhooks/).

    `position_xid`/`position_id` is the change-feed position up to which every
    change has been acknowledged: durable, so a killed server loses nothing.
    The lease says which server process delivers it now.
    """

    STATES = [("enabled", "enabled"), ("disabled", "disabled")]

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True, default="")
    # the signing secret ("whsec_..."); kept in clear because every delivery is signed with it
    secret = models.CharField(max_length=100)
    state = models.CharField(max_length=10, choices=STATES, default="enabled")
    failing_since = models.DateTimeField(null=True, blank=True)
    position_xid = models.BigIntegerField(default=0)
    position_id = models.BigIntegerField(default=0)
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"webhook #{self.pk} {self.url}"


class WebhookAttempt(models.Model):
    """One delivery attempt; only the latest few per webhook are kept."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="attempts")
    message_id = models.CharField(max_length=100)
    person_key = models.CharField(max_length=255)
    seq = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, null=True, blank=True)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["webhook", "-id"], name="attempt_latest")]

    def __str__(self):
        return f"{self.message_id} attempt {self.attempt}"


class StepCount(models.Model):
    """How many step (or flow) instances of a flow version are in each state, kept by triggers.

    Database triggers (migration 0006_dashboard, `stepstream/engine/counters.py`)
    update these rows in the same transaction as every insert, state update or
    delete of a step or flow instance, whatever code runs it, so the
    dashboard reads a flow's counts from a few rows instead of aggregating
    every instance. `identifier` is the step's (only `n_active` and
    `n_completed` are kept for steps), or "" for the flow's own instances.
    Rows are spread over `shard`s (the person's id modulo 16) so concurrent
    writers of one flow do not queue on one row; readers sum them.
    """

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, db_constraint=False, related_name="+")
    identifier = models.CharField(max_length=255)
    shard = models.SmallIntegerField()
    n_inactive = models.BigIntegerField(default=0)
    n_active = models.BigIntegerField(default=0)
    n_completed = models.BigIntegerField(default=0)
    n_exited = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["flow", "identifier", "shard"], name="step_count_unique"
            )
        ]


class StepDuration(models.Model):
    """A histogram of the times from a step becoming active to its completion, kept by a trigger.

    Buckets are quarter-octaves of milliseconds (bucket k holds durations up to
    2^(k/4) ms), so a median read from it is within about 9 % of the exact one.
    """

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, db_constraint=False, related_name="+")
    identifier = models.CharField(max_length=255)
    bucket = models.SmallIntegerField()
    shard = models.SmallIntegerField()
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["flow", "identifier", "bucket", "shard"], name="step_duration_unique"
            )
        ]


class LoginThrottle(models.Model):
    """Failed dashboard sign-ins in a row for one username or one client address.

    Kept by `stepstream/http/dashboard/throttle.py`: `key` is "u:" or "a:" and a
    keyed digest (HMAC with the server secret) of the username or address, never
    either in the clear. A row lives at most one lockout time after its last
    attempt, and the table holds at most STEPSTREAM_LOGIN_THROTTLE_ROWS rows.
    """

    key = models.CharField(max_length=80, unique=True)
    failures = models.IntegerField(default=0)
    last_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["last_at", "id"], name="login_throttle_last_at")]


class ContentSeen(models.Model):
    """A step's content was shown (or its target missing) at least once in an instance.

    Written with the `$shown` / `$target_missing` event that says so, in its
    transaction; one row per instance, step and kind, so analytics counts rows.
    Deleted with the instance (a restart, the person deleted).
    """

    KINDS = [("shown", "shown"), ("target_missing", "target_missing")]

    instance = models.ForeignKey(FlowInstance, on_delete=models.CASCADE, related_name="+")
    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="+")
    identifier = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=KINDS)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "identifier", "kind"], name="content_seen_once"
            )
        ]
        indexes = [models.Index(fields=["flow", "identifier", "kind"], name="content_seen_by_step")]


# Authoring (docs/dashboard.md, "Authoring"): drafts, switches, the audit.


class FlowDraft(models.Model):
    """A flow definition being edited: saved as sent, even when it would not publish."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="drafts")
    identifier = models.CharField(max_length=255)
    body = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)
    # each save adds one; a save naming an older revision is refused (engine.authoring)
    revision = models.PositiveIntegerField(default=1)
    saved_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "identifier"], name="draft_unique")
        ]


class FlowSwitch(models.Model):
    """A flow's switches, for all its versions; no row means enabled, no window, not archived.

    Read by the engine inside each write's transaction (explicit starts) and with
    the environment's rules (start_when), which every change here bumps.
    """

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    identifier = models.CharField(max_length=255)
    enabled = models.BooleanField(default=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    archived = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "identifier"], name="switch_unique")
        ]


class AuditEntry(models.Model):
    """One successful configuration change of an environment, written with the change."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    actor = models.CharField(max_length=160)
    action = models.CharField(max_length=40)
    object = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["environment", "id"], name="audit_by_env")]


# Orchestration (docs/rules.md, "Limits", "Timers", "Pages").


class Limit(models.Model):
    """At most `max` starts of `flows` (a list of identifiers, or "*") per person per window."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="limits")
    identifier = models.CharField(max_length=255)
    flows = models.JSONField(default=list)
    max = models.PositiveIntegerField()
    window = models.CharField(max_length=20)  # as written: "24h"
    window_seconds = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "identifier"], name="limit_unique")
        ]


class PendingTimer(models.Model):
    """A durable timer: a job to look at a person again at `due_at`.

    `kind` "timer": the `after` transition `transition` leaving `from_step` of
    `instance`; `kind` "deferred": the deferred start of `flow_identifier`,
    held back by the limit named in `transition`. `waiting`: fired once with a
    false condition, now run by the person's writes that make it true (not polled).
    """

    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="+")
    instance = models.ForeignKey(
        FlowInstance, on_delete=models.CASCADE, null=True, related_name="+"
    )
    kind = models.CharField(max_length=10)
    flow_identifier = models.CharField(max_length=255)
    from_step = models.CharField(max_length=255, blank=True, default="")
    transition = models.CharField(max_length=255)
    due_at = models.DateTimeField()
    waiting = models.BooleanField(default=False)
    # a firing of the person failed: not tried again until then (engine.timers.hold_back)
    claimed_until = models.DateTimeField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["due_at"], name="timer_due", condition=models.Q(waiting=False)),
            models.Index(fields=["person", "flow_identifier"], name="timer_person"),
        ]


class PersonPage(models.Model):
    """The latest page a person's browser reported (the WebSocket action `page`)."""

    person = models.OneToOneField(Person, on_delete=models.CASCADE, related_name="+")
    url = models.TextField()
