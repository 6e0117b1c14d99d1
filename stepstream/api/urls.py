from django.urls import path, re_path
from drf_spectacular.views import SpectacularJSONAPIView

from stepstream.api import views

KEY = r"(?P<key>[^/]+)"

urlpatterns = [
    path("health", views.health),
    path("ready", views.ready),
    path(
        "openapi.json",
        SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="openapi",
    ),
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
]
