"""Admin pages. States are read-only here: they change only through the engine,
which the instance actions below call, so admin changes reach subscribers too."""

from django import forms
from django.contrib import admin, messages

from stepstream import engine
from stepstream.errors import StepstreamError
from stepstream.models import (
    ApiKey,
    Environment,
    Flow,
    FlowInstance,
    Person,
    Project,
    Segment,
    StateChange,
    Step,
    StepInstance,
    TrackedEvent,
    Transition,
    Webhook,
    WebhookAttempt,
)


class EnvironmentInline(admin.TabularInline):
    model = Environment
    fields = ["identifier", "verification_mode"]
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    inlines = [EnvironmentInline]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["project", "identifier", "verification_mode"]
    exclude = ["identity_secret"]
    readonly_fields = ["signed_requests", "unsigned_requests"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["environment", "kind", "hint", "created_at", "revoked_at"]
    fields = ["environment", "kind", "hint", "created_at", "revoked_at"]
    readonly_fields = ["environment", "kind", "hint", "created_at"]

    def has_add_permission(self, request):
        return False  # keys are made by the command line or the API, shown once


class TrackedEventInline(admin.TabularInline):
    """What the person has done (docs/rules.md): one aggregate per event name."""

    model = TrackedEvent
    fields = ("name", "count", "first_at", "last_at", "last_properties")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Person)
class PersonAdmin(admin.ModelAdmin):
    list_display = ["person_key", "environment", "last_seq", "created_at"]
    search_fields = ["person_key"]
    readonly_fields = ["last_seq"]
    inlines = [TrackedEventInline]


class StepInline(admin.TabularInline):
    model = Step
    extra = 0


class TransitionInline(admin.TabularInline):
    model = Transition
    extra = 0


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    list_display = ["identifier", "version", "environment", "created_at"]
    inlines = [StepInline, TransitionInline]

    def get_readonly_fields(self, request, obj=None):
        return ["environment", "identifier", "version", "name"] if obj else []


class StepInstanceInline(admin.TabularInline):
    model = StepInstance
    fields = ("identifier", "name", "state")
    readonly_fields = fields
    extra = 0
    can_delete = False


def _engine_action(name):
    def run(modeladmin, request, queryset):
        for instance in queryset.select_related("person__environment"):
            person = instance.person
            try:
                engine.do_flow_action(
                    person.environment, person.person_key, instance.flow_identifier, name
                )
            except StepstreamError as e:
                modeladmin.message_user(request, str(e), messages.WARNING)

    run.__name__ = f"{name}_flows"
    return admin.action(description=f"{name.capitalize()} the selected flow instances")(run)


@admin.register(FlowInstance)
class FlowInstanceAdmin(admin.ModelAdmin):
    list_display = ["flow_identifier", "person", "state", "created_at"]
    list_filter = ["state"]
    readonly_fields = ["person", "flow", "flow_identifier", "state"]
    inlines = [StepInstanceInline]
    actions = [
        _engine_action("pause"),
        _engine_action("resume"),
        _engine_action("exit"),
        "restart_flows",
    ]

    @admin.action(description="Restart the selected flow instances (latest version)")
    def restart_flows(self, request, queryset):
        for instance in queryset.select_related("person__environment"):
            person = instance.person
            try:
                engine.do_restart(person.environment, person.person_key, instance.flow_identifier)
            except StepstreamError as e:
                self.message_user(request, str(e), messages.WARNING)


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    """Read-only: a segment changes through PUT /segments, which compiles its condition
    and makes people's next write see it (docs/rules.md)."""

    list_display = ["identifier", "name", "environment", "condition", "version", "updated_at"]
    search_fields = ["identifier", "name"]
    readonly_fields = ["environment", "identifier", "name", "condition", "version"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(StateChange)
class StateChangeAdmin(admin.ModelAdmin):
    list_display = [
        "person",
        "seq",
        "entity",
        "identifier",
        "previous_state",
        "state",
        "occurred_at",
        "cause",
    ]
    list_filter = ["entity"]

    # the log is append-only: a deleted row would be a gap in the seq promise
    # (deleting the person is the way to drop their log, and restarts it)
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class WebhookForm(forms.ModelForm):
    url = forms.CharField(max_length=2000)  # checked by check_url (http/https, public address)

    class Meta:
        model = Webhook
        fields = ["environment", "url", "description", "state"]

    def clean_url(self):
        from stepstream.delivery.webhooks.addresses import check_url

        try:
            return check_url(self.cleaned_data.get("url"))
        except StepstreamError as e:
            raise forms.ValidationError(str(e)) from None


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("at", "message_id", "person_key", "seq", "attempt", "status_code", "error")
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    can_delete = False

    def get_queryset(self, request):
        ids = super().get_queryset(request).order_by("-id").values_list("id", flat=True)[:50]
        return super().get_queryset(request).filter(id__in=list(ids))


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    """Registration as over REST: the secret is made here and shown once, after saving."""

    form = WebhookForm
    list_display = ["url", "environment", "state", "failing_since", "created_at"]
    list_filter = ["state"]
    readonly_fields = ["failing_since", "created_at"]
    inlines = [WebhookAttemptInline]

    def get_readonly_fields(self, request, obj=None):
        return ["environment", *self.readonly_fields] if obj else self.readonly_fields

    def get_inlines(self, request, obj):
        return self.inlines if obj else []  # no attempts before it exists

    def save_model(self, request, obj, form, change):
        from stepstream.delivery.webhooks import current_position
        from stepstream.delivery.webhooks.signing import new_secret

        if not change:
            obj.secret = new_secret()
            obj.position_xid, obj.position_id = current_position()
        elif "state" in form.changed_data and obj.state == "enabled":
            obj.failing_since = None  # as POST /webhooks/{id}/enable
        super().save_model(request, obj, form, change)
        if not change:
            self.message_user(
                request,
                f"Signing secret (shown once): {obj.secret}",
                messages.SUCCESS,
            )
