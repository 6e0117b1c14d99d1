from django.apps import AppConfig


class StepstreamConfig(AppConfig):
    name = "stepstream"
    verbose_name = "Stepstream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Every process that writes also delivers: to its own hub and, through the
        broker, to every other process (stepstream.engine.commits)."""
        from stepstream.delivery import notify_committed
        from stepstream.engine import commits

        commits.listen(notify_committed)
        from stepstream.trust import keycache

        keycache.watch_keys()
