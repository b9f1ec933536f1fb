"""Who may use the HTTP write paths (POST /switchover): off unless enabled, and with
CONSUL_LEADER_HTTP_TOKEN_FILE set, only with `Authorization: Bearer <that token>`.

Answers, each with a one-line body (the status server writes it):
- writes disabled (CONSUL_LEADER_HTTP_WRITES off, the default): 403;
- no bearer token sent: 401 with `WWW-Authenticate: Bearer`;
- a wrong token: 403 (compared in constant time);
- the token file unreadable or empty since start: 503 (fail closed), logged as an error.

The file is read at start (the configuration refuses an unusable one) and read again whenever
its size, modification time or inode change, so a rotated token takes effect at the next
request without a restart. Neither the token sent nor the one expected is ever logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from dataclasses import dataclass

from consul_leader.adapters.config import is_usable_token, read_token_file

log = logging.getLogger("consul_leader.http")

BEARER = "bearer"


@dataclass(frozen=True)
class Denial:
    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


class BearerGate:
    def __init__(self, enabled: bool, token_file: str | None) -> None:
        self._enabled = enabled
        self._token_file = token_file
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def check(self, authorization: str) -> Denial | None:
        """None when the request may write; else why not."""
        if not self._enabled:
            return Denial(403, "write paths are disabled (set CONSUL_LEADER_HTTP_WRITES=on)")
        if self._token_file is None:
            return None
        expected = self._current_token()
        if expected is None:
            return Denial(503, "write paths unavailable: CONSUL_LEADER_HTTP_TOKEN_FILE cannot "
                               "be read")
        scheme, _, sent = authorization.strip().partition(" ")
        if scheme.lower() != BEARER or not sent.strip():
            return Denial(401, "a bearer token is required (Authorization: Bearer <token>)",
                          (("WWW-Authenticate", 'Bearer realm="consul-leader"'),))
        if not hmac.compare_digest(sent.strip().encode(), expected.encode()):
            return Denial(403, "the bearer token is not valid")
        return None

    def _current_token(self) -> str | None:
        assert self._token_file is not None
        try:
            info = os.stat(self._token_file)
        except OSError as exc:
            log.error("cannot read CONSUL_LEADER_HTTP_TOKEN_FILE", extra={"error": exc.strerror})
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        with self._lock:
            if stamp != self._stamp:
                self._token, self._stamp = self._read(), stamp
            return self._token

    def _read(self) -> str | None:
        assert self._token_file is not None
        try:
            token = read_token_file(self._token_file)
        except (OSError, ValueError) as exc:
            log.error("cannot read CONSUL_LEADER_HTTP_TOKEN_FILE", extra={"error": str(exc)})
            return None
        if token is None or not is_usable_token(token):
            log.error("CONSUL_LEADER_HTTP_TOKEN_FILE holds no usable token")
            return None
        return token
