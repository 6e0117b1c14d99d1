"""One error type for every transport: a status, a machine code and sentences.

REST renders it as `{"errors": [...], "code": ...}` with the status; the
WebSocket puts the same status, code and sentences in its response.
"""


class StepstreamError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, *messages: str, status: int | None = None, code: str | None = None):
        super().__init__("; ".join(messages))
        self.messages = list(messages)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class Invalid(StepstreamError):
    status, code = 400, "invalid"
    # set on a WebSocket message's error once its request_id is read (stepstream.strictjson)
    request_id: object


class Unauthenticated(StepstreamError):
    status, code = 401, "unauthenticated"


class Forbidden(StepstreamError):
    status, code = 403, "forbidden"


class NotFound(StepstreamError):
    status, code = 404, "not_found"


class Conflict(StepstreamError):
    status, code = 409, "conflict"


class TooLarge(StepstreamError):
    status, code = 413, "too_large"


class RateLimited(StepstreamError):
    status, code = 429, "rate_limited"


class Unavailable(StepstreamError):
    status, code = 503, "unavailable"
