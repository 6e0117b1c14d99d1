"""Routes under /dashboard/ (namespace "dashboard")."""

from django.urls import path

import stepstream.http.convertors  # noqa: F401 - registers <seg:...>: one key per segment
from stepstream.http.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("<int:env_id>/", views.environment_home, name="environment"),
    path("<int:env_id>/flows/", views.flows, name="flows"),
    path("<int:env_id>/flows/<seg:identifier>/", views.flow, name="flow"),
    path("<int:env_id>/flow/", views.flow, name="flow_by_query"),  # ?flow=KEY: "." and ".."
    path("<int:env_id>/flow-change/", views.flow_change, name="flow_change"),
    path("<int:env_id>/new-flow/", views.builder, name="new_flow"),
    path("<int:env_id>/flows/<seg:identifier>/edit/", views.builder, name="edit_flow"),
    path("<int:env_id>/builder-api/", views.builder_api, name="builder_api"),
    path("<int:env_id>/audit/", views.audit_page, name="audit"),
    path("<int:env_id>/people/", views.people, name="people"),
    path("<int:env_id>/people/<seg:person_key>/", views.person, name="person"),
    path("<int:env_id>/person/", views.person, name="person_by_query"),  # ?key=KEY
    path("<int:env_id>/segments/", views.segments, name="segments"),
    path("<int:env_id>/webhooks/", views.webhooks, name="webhooks"),
    path("<int:env_id>/keys/", views.keys, name="keys"),
    path("<int:env_id>/keys/rotate/", views.rotate_key, name="rotate_key"),
    path("<int:env_id>/keys/<int:key_id>/revoke/", views.revoke_key, name="revoke_key"),
]
