from django.apps import AppConfig


class StepstreamConfig(AppConfig):
    name = "stepstream"
    verbose_name = "Stepstream"
    default_auto_field = "django.db.models.BigAutoField"
