"""What a Consul request can fail with, sorted so callers can tell "Consul said no" from
"Consul could not answer", and the few refusals the adapters act on by name.

Every ``str()`` is one line; no error carries the ACL token.
"""

from __future__ import annotations

import logging


class ConsulError(Exception):
    """A request that did not produce a usable answer; ``str()`` is one line."""

    def __init__(self, reason: str, *, method: str = "", endpoint: str = "",
                 status: int | None = None, body: str = "") -> None:
        self.reason = reason
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.body = body
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        where = " ".join(part for part in (self.method, self.endpoint) if part)
        text = f"{where}: {self.reason}" if where else self.reason
        if self.status is not None:
            text += f" (HTTP {self.status})"
        if self.body:
            text += ": " + " ".join(self.body.split())
        return text


class ConsulUnavailable(ConsulError):
    """Consul could not answer: transport failure, timeout, 5xx, 429, unusable body."""


class MalformedAnswer(ConsulUnavailable):
    """An answer of the wrong shape (a list where an object belongs, a missing ID...)."""


class ConsulDenied(ConsulError):
    """403: the ACL token is missing, unknown, or lacks a permission."""


class ConsulRejected(ConsulError):
    """A 4xx (other than 403) the caller did not allow: the request itself was wrong."""


class TlsError(ConsulUnavailable):
    """The TLS handshake failed (certificate not trusted, name mismatch, client cert refused)."""


class CheckNotUsable(ConsulError):
    """`session/create` refused: a check the session binds to is missing or critical
    (`Missing check '<id>' registration`, `Check '<id>' is in critical state`)."""

    def __init__(self, check_id: str, problem: str, cause: ConsulError) -> None:
        super().__init__(f"check {check_id} is {problem}", method=cause.method,
                         endpoint=cause.endpoint, status=cause.status, body=cause.body)
        self.check_id = check_id
        self.problem = problem


class SettingRefused(ConsulError):
    """Consul refused one of our settings (the session TTL below its session_ttl_min)."""

    def __init__(self, variable: str, cause: ConsulError) -> None:
        super().__init__(f"Consul refused {variable}", method=cause.method,
                         endpoint=cause.endpoint, status=cause.status, body=cause.body)
        self.variable = variable


class InvalidSession(ConsulError):
    """`?acquire` named a session Consul does not know (`invalid session "<id>"`)."""


def log_level(exc: BaseException) -> int:
    """Denials and TLS failures need an operator (a policy or a certificate), so they are
    errors; everything else is a transient fault that retries fix, so a warning."""
    return logging.ERROR if isinstance(exc, ConsulDenied | TlsError) else logging.WARNING
