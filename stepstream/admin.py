"""Admin pages. States are read-only here: they change only through the engine,
which the instance actions below call, so admin changes reach subscribers too."""

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
    fields = ["name", "count", "first_at", "last_at", "last_properties"]
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
    fields = ["identifier", "name", "state"]
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
    run.short_description = f"{name.capitalize()} the selected flow instances"
    return run


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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
