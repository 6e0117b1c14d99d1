from django.urls import path, re_path

from stepstream.api import reference, trust, views

KEY = r"(?P<key>[^/]+)"

urlpatterns = [
    path("health", views.health),
    path("ready", views.ready),
    path("openapi.json", reference.openapi_json, name="openapi"),
    path("docs", reference.reference_page, name="api-docs"),
    path("schema/person", views.person_schema),
    path("flows", views.flow_list),
    re_path(r"^flows/(?P<identifier>[^/]+)$", views.flow_detail),
    re_path(rf"^people/{KEY}$", views.person),
    re_path(rf"^people/{KEY}/flows$", views.person_flows),
    re_path(rf"^people/{KEY}/flows/(?P<flow>[^/]+)/transitions$", views.person_transition),
    re_path(
        rf"^people/{KEY}/flows/(?P<flow>[^/]+)/(?P<action>pause|resume|exit)$",
        views.person_flow_action,
    ),
    re_path(rf"^people/{KEY}/events$", views.person_events),
    path("identity-verification", trust.identity_verification),
    path("identity-verification/secret", trust.identity_secret),
    path("keys", trust.keys),
    re_path(r"^keys/(?P<key_id>[0-9]{1,18})/revoke$", trust.revoke_key),
    path("allowed-origins", trust.allowed_origins),
]
