from django.apps import AppConfig


class StepstreamConfig(AppConfig):
    name = "stepstream"
    verbose_name = "Stepstream"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Wires what every process needs; a server's runtime (stepstream.http.runtime)
        adds its hub and broker when its lifespan starts."""
        from stepstream import delivery
        from stepstream.trust import keycache

        # trust sits below delivery: delivery hands it the way to tell the others. A
        # command (no runtime) tells with a broker of its own and hears nothing; a
        # server's runtime (stepstream.http.runtime) installs its own while it runs.
        keycache.watch_keys(keycache.Peers(tell=delivery.tell_keys_changed, hear=lambda: False))
        # the admin is a web interface: it lives with HTTP, registered here (Django's
        # autodiscover looks only for `stepstream.admin`)
        from stepstream.http import admin  # noqa: F401
