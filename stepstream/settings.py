"""Django settings, all derived from the environment (see stepstream.config)."""

from stepstream import config

SECRET_KEY = config.secret_key()
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "stepstream.http.urls"
ASGI_APPLICATION = "stepstream.http.asgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"
DATA_UPLOAD_MAX_MEMORY_SIZE = config.int_setting("STEPSTREAM_MAX_BODY_BYTES", 1024 * 1024)
CSRF_FAILURE_VIEW = "stepstream.http.views.csrf_failure"  # JSON, like every error body

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "stepstream",
]

MIDDLEWARE = [
    "stepstream.http.metrics_view.RequestDurationMiddleware",
    "stepstream.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# The dashboard (/dashboard/) signs staff in with Django's sessions; its cookie is
# never readable by scripts nor sent on cross-site requests.
LOGIN_URL = "/dashboard/login/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 12

DATABASES = {"default": config.database_settings()}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["stepstream.http.api.auth.SecretKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["stepstream.http.api.auth.HasEnvironment"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["stepstream.http.api.parsers.StrictJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "stepstream.http.api.negotiation.JsonNegotiation",
    "EXCEPTION_HANDLER": "stepstream.http.api.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

LOG_FORMAT = config.choice_setting("STEPSTREAM_LOG_FORMAT", "plain", ["plain", "json"])
LOG_LEVEL = config.choice_setting(
    "STEPSTREAM_LOG_LEVEL", "info", ["debug", "info", "warning", "error", "critical"]
).upper()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "stepstream.observability.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "stepstream.observability.JsonFormatter"},
    },
    "filters": {
        "redact": {"()": "stepstream.redact.RedactingFilter"},
        "request_id": {"()": "stepstream.observability.RequestIdFilter"},
        # a handler's filter: a logger's would miss django.security's children
        "suspicious": {"()": "stepstream.observability.SuspiciousRequestFilter"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact", "request_id", "suspicious"],
        }
    },
    "root": {
        "handlers": ["stderr"],
        "level": LOG_LEVEL,
    },
    "loggers": {
        "django.request": {"level": "ERROR"},
        # websockets' "connection open" / "connection closed", per socket (stepstream.ws.sansio)
        "stepstream.ws.websockets": {"level": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"},
    },
}

# Stepstream limits and timings (every one overridable from the environment).
STEPSTREAM: config.StepstreamSettings = {
    "REDIS_URL": config.redis_url(),
    "WS_MAX_MESSAGE_BYTES": config.int_setting("STEPSTREAM_WS_MAX_MESSAGE_BYTES", 64 * 1024),
    "WS_RATE_PER_SECOND": config.int_setting("STEPSTREAM_WS_RATE_PER_SECOND", 200),
    "WS_RATE_BURST": config.int_setting("STEPSTREAM_WS_RATE_BURST", 400),
    "WS_MAX_SUBSCRIPTIONS": config.int_setting("STEPSTREAM_WS_MAX_SUBSCRIPTIONS", 200),
    # open sockets per environment (all its publishable keys) and process; the old
    # name, STEPSTREAM_WS_MAX_CONNECTIONS_PER_KEY, is still read (deprecated)
    "WS_MAX_CONNECTIONS_PER_ENVIRONMENT": config.int_setting(
        config.renamed("STEPSTREAM_WS_MAX_CONNECTIONS_PER_ENVIRONMENT"), 20000
    ),
    "WS_OUTBOX_LIMIT": config.int_setting("STEPSTREAM_WS_OUTBOX_LIMIT", 5000),
    # what one socket may make the server hold for it (queued answers and events,
    # unread pongs), in bytes; beyond: closed with 4408 (stepstream/ws/sansio.py)
    "WS_MAX_BUFFER_BYTES": config.int_setting("STEPSTREAM_WS_MAX_BUFFER_BYTES", 16 * 1024 * 1024),
    "WS_STALL_TIMEOUT": config.float_setting("STEPSTREAM_WS_STALL_TIMEOUT", 30.0),
    # permessage-deflate: about 40 KiB more per socket (its compressor and
    # decompressor) and each event compressed once per socket, not framed once
    # for all; events are a few hundred bytes (docs/performance-history.md)
    "WS_COMPRESSION": config.bool_setting("STEPSTREAM_WS_COMPRESSION", False),
    "WS_PING_INTERVAL": config.float_setting("STEPSTREAM_WS_PING_INTERVAL", 20.0),
    "WS_PING_TIMEOUT": config.float_setting("STEPSTREAM_WS_PING_TIMEOUT", 20.0),
    "LOG_POLL_INTERVAL": config.float_setting("STEPSTREAM_LOG_POLL_INTERVAL", 0.1),
    "RECONCILE_INTERVAL": config.float_setting("STEPSTREAM_RECONCILE_INTERVAL", 0.5),
    "DB_THREADS": config.int_setting("STEPSTREAM_DB_THREADS", 8),
    # on PostgreSQL, listen for the database's notice that keys changed (trust/keywatch.py)
    "KEY_NOTIFY": config.bool_setting("STEPSTREAM_KEY_NOTIFY", True),
    # group commit (stepstream/engine/groupcommit.py): engine writes queued, at most
    # MAX_BATCH per transaction; a full queue or a job that waited WAIT seconds is
    # refused (503) unwritten. On by default on SQLite only: on PostgreSQL one batch at
    # a time costs more than it saves (docs/performance-history.md, "Group commit")
    "GROUP_COMMIT": config.bool_setting("STEPSTREAM_GROUP_COMMIT", config.database_url() is None),
    "GROUP_COMMIT_MAX_BATCH": config.int_setting("STEPSTREAM_GROUP_COMMIT_MAX_BATCH", 64),
    "GROUP_COMMIT_QUEUE": config.int_setting("STEPSTREAM_GROUP_COMMIT_QUEUE", 1000),
    "GROUP_COMMIT_WAIT": config.float_setting("STEPSTREAM_GROUP_COMMIT_WAIT", 10.0),
    "HTTP_THREADS": config.int_setting("STEPSTREAM_HTTP_THREADS", 8),
    "MAX_FLOW_STEPS": config.int_setting("STEPSTREAM_MAX_FLOW_STEPS", 500),
    "MAX_FLOW_TRANSITIONS": config.int_setting("STEPSTREAM_MAX_FLOW_TRANSITIONS", 2000),
    # condition budgets (docs/rules.md, "Condition budgets"): the largest inputs a write
    # may hold, and the most a condition may cost for inputs that large
    "DATA_MAX_ITEMS": config.int_setting("STEPSTREAM_DATA_MAX_ITEMS", 256),
    "DATA_MAX_STRING": config.int_setting("STEPSTREAM_DATA_MAX_STRING", 4096),
    "DATA_MAX_BYTES": config.int_setting("STEPSTREAM_DATA_MAX_BYTES", 32768),
    "MAX_EVENT_NAMES": config.int_setting("STEPSTREAM_MAX_EVENT_NAMES", 1000),
    "MAX_FLOWS": config.int_setting("STEPSTREAM_MAX_FLOWS", 1000),
    # all of a flow version's step content, as JSON (docs/content.md, "Limits")
    "MAX_CONTENT_BYTES": config.int_setting("STEPSTREAM_MAX_CONTENT_BYTES", 256 * 1024),
    "AUDIT_MAX_ENTRIES": config.int_setting("STEPSTREAM_AUDIT_MAX_ENTRIES", 100_000),
    "CONDITION_COST_BUDGET": config.int_setting("STEPSTREAM_CONDITION_COST_BUDGET", 100_000),
    # conditions estimated above this are evaluated in a child process with a deadline
    "CONDITION_INLINE_COST": config.int_setting("STEPSTREAM_CONDITION_INLINE_COST", 2000),
    "CONDITION_TIMEOUT": config.float_setting("STEPSTREAM_CONDITION_TIMEOUT", 0.05),
    "CONDITION_SUSPEND_SECONDS": config.float_setting(
        "STEPSTREAM_CONDITION_SUSPEND_SECONDS", 300.0
    ),
    # how often each process re-checks its open connections' keys (revoked: close 4403)
    # and re-reads identity-verification settings; also the delay of the request counters
    "KEY_CHECK_INTERVAL": config.float_setting("STEPSTREAM_KEY_CHECK_INTERVAL", 1.0),
    # the HTTP connection limits of `stepstream serve` (stepstream.http.connlimits)
    "HTTP_MAX_HEADER_BYTES": config.int_setting("STEPSTREAM_HTTP_MAX_HEADER_BYTES", 64 * 1024),
    "HTTP_REQUEST_TIMEOUT": config.float_setting("STEPSTREAM_HTTP_REQUEST_TIMEOUT", 30.0),
    "HTTP_MAX_PENDING": config.int_setting("STEPSTREAM_HTTP_MAX_PENDING", 10000),
    "HTTP_MAX_PENDING_BYTES": config.int_setting(
        "STEPSTREAM_HTTP_MAX_PENDING_BYTES", 64 * 1024 * 1024
    ),
    # outbound (docs/webhooks.md): webhooks and metrics
    "WEBHOOK_ALLOW_PRIVATE": config.bool_setting("STEPSTREAM_WEBHOOK_ALLOW_PRIVATE", False),
    "WEBHOOK_RETRY_HOURS": config.float_setting(
        "STEPSTREAM_WEBHOOK_RETRY_HOURS", 24.0, minimum=0.0001
    ),
    "WEBHOOK_RETRY_BASE_SECONDS": config.float_setting(
        "STEPSTREAM_WEBHOOK_RETRY_BASE_SECONDS", 2.0
    ),
    "WEBHOOK_RETRY_MAX_SECONDS": config.float_setting(
        "STEPSTREAM_WEBHOOK_RETRY_MAX_SECONDS", 600.0
    ),
    "WEBHOOK_TIMEOUT_SECONDS": config.float_setting("STEPSTREAM_WEBHOOK_TIMEOUT_SECONDS", 10.0),
    "WEBHOOK_CONCURRENCY": config.int_setting("STEPSTREAM_WEBHOOK_CONCURRENCY", 16),
    "WEBHOOK_POLL_INTERVAL": config.float_setting("STEPSTREAM_WEBHOOK_POLL_INTERVAL", 0.1),
    "WEBHOOK_LEASE_SECONDS": config.float_setting("STEPSTREAM_WEBHOOK_LEASE_SECONDS", 6.0),
    "METRICS_TOKEN": config.os.environ.get("STEPSTREAM_METRICS_TOKEN", ""),
    # dashboard sign-in throttling (stepstream/http/dashboard/throttle.py): after this many
    # failures in a row for a username or a client address, 429 for LOCKOUT_SECONDS, the
    # password not checked; at most THROTTLE_ROWS counters are kept (the oldest go first)
    "LOGIN_MAX_FAILURES": config.int_setting("STEPSTREAM_LOGIN_MAX_FAILURES", 20, maximum=20),
    "LOGIN_LOCKOUT_SECONDS": config.int_setting("STEPSTREAM_LOGIN_LOCKOUT_SECONDS", 900),
    "LOGIN_THROTTLE_ROWS": config.int_setting(
        "STEPSTREAM_LOGIN_THROTTLE_ROWS", 100_000, minimum=100
    ),
}
