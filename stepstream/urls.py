from django.contrib import admin
from django.urls import include, path

from stepstream import views

urlpatterns = [
    path("api/v1/", include("stepstream.api.urls")),
    path("admin/", admin.site.urls),
    path("demo", views.demo),
]

handler404 = "stepstream.api.errors.not_found"  # JSON, as every error (CONTRACT.md)
