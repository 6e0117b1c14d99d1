from django.apps import AppConfig


class StepstreamConfig(AppConfig):
    name = "stepstream"
    verbose_name = "Stepstream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Every process that writes also delivers: to its own hub and, through the
        broker, to every other process (stepstream.engine.commits)."""
        from stepstream import delivery
        from stepstream.engine import commits
        from stepstream.trust import keycache

        commits.listen(delivery.notify_committed)
        # trust sits below delivery: delivery hands it the way to tell and hear the others
        delivery.on_keys_changed(keycache.forget)
        keycache.watch_keys(keycache.Peers(tell=delivery.keys_changed, hear=delivery.hears_keys))
        # the admin is a web interface: it lives with HTTP, registered here (Django's
        # autodiscover looks only for `stepstream.admin`)
        from stepstream.http import admin  # noqa: F401
