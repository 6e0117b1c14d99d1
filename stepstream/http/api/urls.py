from django.urls import path, re_path

import stepstream.http.convertors  # noqa: F401 - registers <seg:...>: one identifier per segment
from stepstream.http.api import reference, trust, views

KEY = "people/<seg:key>"

urlpatterns = [
    path("health", views.health),
    path("ready", views.ready),
    path("openapi.json", reference.openapi_json, name="openapi"),
    path("docs", reference.reference_page, name="api-docs"),
    path("schema/person", views.person_schema),
    path("flows", views.flow_list),
    path("flows/<seg:identifier>", views.flow_detail),
    path("flows/<seg:identifier>/unarchive", views.flow_unarchive),
    path("flows/<seg:identifier>/versions", views.flow_versions),
    path("flows/<seg:identifier>/versions/<int:number>/promote", views.flow_promote),
    path("flows/<seg:identifier>/draft", views.flow_draft),
    path("flows/<seg:identifier>/draft/publish", views.flow_draft_publish),
    path("conditions/check", views.condition_check),
    path("audit", views.audit_log),
    path(KEY, views.person),
    path(f"{KEY}/flows", views.person_flows),
    path(f"{KEY}/flows/<seg:flow>/transitions", views.person_transition),
    *(
        path(f"{KEY}/flows/<seg:flow>/{action}", views.person_flow_action, {"action": action})
        for action in ("pause", "resume", "exit")
    ),
    path(f"{KEY}/flows/<seg:flow>/steps/<seg:step>/complete", views.person_complete_step),
    path(f"{KEY}/events", views.person_events),
    path(f"{KEY}/track", views.person_track),
    path(f"{KEY}/explain", views.person_explain),
    path(f"{KEY}/flows/<seg:flow>/restart", views.person_restart),
    path("segments", views.segment_list),
    path("segments/<seg:identifier>", views.segment_detail),
    path("segments/<seg:identifier>/people", views.segment_people),
    path("limits", views.limit_list),
    path("limits/<seg:identifier>", views.limit_detail),
    path("identity-verification", trust.identity_verification),
    path("identity-verification/secret", trust.identity_secret),
    path("keys", trust.keys),
    re_path(r"^keys/(?P<key_id>[0-9]{1,18})/revoke$", trust.revoke_key),
    path("allowed-origins", trust.allowed_origins),
    path("events", views.change_feed),
    path("webhooks", views.webhook_list),
    re_path(r"^webhooks/(?P<hook_id>[0-9]{1,18})$", views.webhook_detail),
    re_path(r"^webhooks/(?P<hook_id>[0-9]{1,18})/enable$", views.webhook_enable),
    re_path(r"^webhooks/(?P<hook_id>[0-9]{1,18})/deliveries$", views.webhook_deliveries),
    path("flows/<seg:identifier>/analytics", views.flow_analytics),
    path("theme", views.theme_detail),
]
