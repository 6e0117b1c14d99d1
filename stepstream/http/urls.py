from django.contrib import admin
from django.urls import include, path

from stepstream.http import metrics_view, views

urlpatterns = [
    path("api/v1/", include("stepstream.http.api.urls")),
    path("admin/", admin.site.urls),
    path("", views.home),
    path("demo", views.demo),
    path("demo/reset", views.demo_reset),
    path("metrics", metrics_view.view),
    path("dashboard/", include("stepstream.http.dashboard.urls")),
]

# every error body is JSON, unknown routes included (stepstream.http.views)
handler400 = views.bad_request
handler403 = views.forbidden
handler404 = views.not_found
handler500 = views.server_error
