"""Consul HTTP transport: one place that sends requests and sorts the answers.

``ConsulClient.call`` returns a ``Reply`` for a 2xx answer or a status the caller
allows, and otherwise raises one of four errors, so callers can tell "Consul said
no" from "Consul could not answer":

* ``ConsulUnavailable``: no usable answer (connection refused or reset, timeout,
  5xx, 429, an unparsable body). Worth retrying later.
* ``TlsError`` (a ``ConsulUnavailable``): the TLS handshake failed, for example an
  unknown CA or a name mismatch. Never retried without verification.
* ``ConsulDenied``: 403 from the ACL system, after at most one retry with a token
  re-read from ``CONSUL_HTTP_TOKEN_FILE`` if that file changed.
* ``ConsulRejected``: any other status the caller did not allow (our request was wrong).

Guarantees:

* The ACL token travels only in the ``X-Consul-Token`` header. It never appears in a
  URL, a log line, an exception or a ``repr`` (a body echoing it is redacted).
* Thread-safe: adapter threads share one pooled session; a blocking query holds one
  connection for its whole wait without blocking other callers.
* TLS follows the Go client: the CA file, else every certificate under the CA
  directory, else the system roots; never more than that (``REQUESTS_CA_BUNDLE``
  and certifi are ignored). ``CONSUL_TLS_SERVER_NAME`` sets both SNI and the name
  checked. Verification is off only when ``CONSUL_HTTP_SSL_VERIFY=false``.
* Redirects are not followed: Consul only redirects unclean paths, and following one
  would resend the token wherever ``Location`` points.
* ``HTTP(S)_PROXY``/``NO_PROXY`` from the environment apply, as in Go's client.

Not guaranteed: the timeout bounds connecting (at most the client's ``connect_timeout``)
and each read, not the whole exchange; a server that trickles bytes can take longer.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from consul_leader.adapters.config import (
    ConsulSettings,
    is_usable_token,
    load_ca_directory,
    load_client_pair,
    read_token_file,
)
from consul_leader.adapters.consul.errors import (
    ConsulDenied,
    ConsulError,
    ConsulRejected,
    ConsulUnavailable,
    MalformedAnswer,
    TlsError,
)

log = logging.getLogger(__name__)

RequestObserver = Callable[[str, str, int | None, float, bool], None]
"""Called once per HTTP attempt: (method, endpoint template, status or None, seconds, watch);
``watch`` is True for a blocking query (see ``is_watch``)."""

USER_AGENT = "consul-leader"
BODY_LIMIT = 300
TOKEN_HEADER = "X-Consul-Token"
OTHER_ENDPOINT = "other"


# --- replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A successful (or explicitly allowed) answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    method: str = ""
    endpoint: str = ""

    def json(self) -> Any:
        """The body decoded as JSON; ``ConsulUnavailable`` if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise MalformedAnswer(
                f"unparsable answer ({exc.__class__.__name__})", method=self.method,
                endpoint=self.endpoint, status=self.status, body=_printable(self.body),
            ) from None

    @property
    def index(self) -> int | None:
        """``X-Consul-Index``, or None when missing or not a non-negative integer."""
        text = self.headers.get("X-Consul-Index", "")
        return int(text) if text.isascii() and text.isdigit() else None

    @property
    def content_hash(self) -> str | None:
        """``X-Consul-ContentHash`` (hash-based blocking), or None."""
        return self.headers.get("X-Consul-ContentHash") or None


# --- endpoint labels ---------------------------------------------------------------------

_ANY = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"})
_PUT = frozenset({"PUT"})
# (methods, path pattern, label): first match wins; a label may use the pattern's groups.
_ENDPOINTS: tuple[tuple[frozenset[str], re.Pattern[str], str], ...] = tuple(
    (methods, re.compile(pattern), label) for methods, pattern, label in (
        (_ANY, r"/v1/kv/.*", "/v1/kv/:key"),
        (_ANY, r"/v1/session/(create|list)", r"\g<0>"),
        (_ANY, r"/v1/session/(renew|destroy|info)/.+", r"/v1/session/\1/:id"),
        (_ANY, r"/v1/session/node/.+", "/v1/session/node/:node"),
        (_PUT, r"/v1/agent/service/register", r"\g<0>"),
        (_PUT, r"/v1/agent/service/(deregister|maintenance)/.+", r"/v1/agent/service/\1/:id"),
        (_ANY, r"/v1/agent/service/.+", "/v1/agent/service/:id"),
        (_ANY, r"/v1/agent/(services|checks|self|members|host|version)", r"\g<0>"),
        (_PUT, r"/v1/agent/check/register", r"\g<0>"),
        (_ANY, r"/v1/agent/check/(deregister|pass|warn|fail|update)/.+",
         r"/v1/agent/check/\1/:id"),
        (_ANY, r"/v1/health/(service|checks|connect|ingress)/.+", r"/v1/health/\1/:name"),
        (_ANY, r"/v1/health/node/.+", "/v1/health/node/:node"),
        (_ANY, r"/v1/health/state/.+", "/v1/health/state/:state"),
        (_ANY, r"/v1/catalog/(service|connect)/.+", r"/v1/catalog/\1/:name"),
        (_ANY, r"/v1/catalog/(node|node-services)/.+", r"/v1/catalog/\1/:node"),
        (_ANY, r"/v1/catalog/(services|nodes|datacenters|register|deregister)", r"\g<0>"),
        (_ANY, r"/v1/status/(leader|peers)", r"\g<0>"),
        (_ANY, r"/v1/txn", r"\g<0>"),
    )
)


def endpoint_template(method: str, path: str) -> str:
    """A bounded label for ``path`` (``/v1/kv/:key``), or ``other`` for unknown paths.

    The method tells ``PUT /v1/agent/service/register`` from ``GET`` of a service
    whose ID happens to be ``register``.
    """
    path = path.partition("?")[0]
    for methods, pattern, label in _ENDPOINTS:
        match = pattern.fullmatch(path)
        if match and method.upper() in methods:
            return match.expand(label)
    return OTHER_ENDPOINT


def is_watch(method: str, params: Mapping[str, str] | None) -> bool:
    """Whether a request is a blocking query, which may wait up to its ``?wait=``.

    Consul blocks a GET only for a non-zero ``?index=`` or for a ``?hash=``; a first read
    without them (or with ``index=0``) answers at once, like any other request.
    """
    if method.upper() != "GET" or not params:
        return False
    return params.get("index", "0") not in ("", "0") or bool(params.get("hash"))


# --- the client --------------------------------------------------------------------------


class ConsulClient:
    """Sends requests to one Consul agent; safe to share between threads."""

    def __init__(self, settings: ConsulSettings, *, observer: RequestObserver | None = None,
                 pool_size: int = 16, connect_timeout: float | None = None) -> None:
        """``connect_timeout`` caps connecting (a blocking query's long read timeout must
        not let an unreachable agent hold a connect attempt that long)."""
        self._connect_timeout = connect_timeout
        self._settings = settings
        self._observer = observer
        self._token_lock = threading.Lock()
        self._token = settings.token
        self._token_source = settings.token_source
        self._auth = _basic_auth(settings.http_auth)
        self._session = _build_session(settings, pool_size)
        self._target = settings.unix_socket or settings.base_url
        if not settings.verify and settings.base_url.startswith("https:"):
            log.warning("TLS certificate verification is off (CONSUL_HTTP_SSL_VERIFY=false)")

    def __repr__(self) -> str:
        return f"ConsulClient({self._settings.base_url!r}, token_source={self.token_source!r})"

    @property
    def token_source(self) -> str:
        """Where the token in use came from: ``file``, ``env`` or ``none``."""
        with self._token_lock:
            return self._token_source

    def close(self) -> None:
        """Close pooled connections; in-flight calls on other threads fail as unavailable."""
        self._session.close()

    def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
             data: bytes | None = None, json_body: Any = None, timeout: float,
             allow: Collection[int] = ()) -> Reply:
        """Send one request; see the module docstring for what is returned or raised.

        ``path`` is unquoted (``/v1/kv/my key``): every character but ``/`` is escaped
        here, so keys cannot smuggle a query string. Put query parameters in ``params``.
        """
        if data is not None and json_body is not None:
            raise ValueError("pass data or json_body, not both")
        if timeout <= 0:
            raise ValueError("timeout must be above 0")
        body, headers = _encode_body(data, json_body)
        request = _Request(method=method.upper(), path=path,
                           endpoint=endpoint_template(method, path), params=params, body=body,
                           headers=headers, timeout=timeout, watch=is_watch(method, params))
        token = self._current_token()
        response = self._send(request, token)
        if response.status_code == 403:
            fresh = self._rotated_token(token)
            if fresh is not None:
                response = self._send(request, fresh)
        return self._judge(request, response, allow)

    # --- sending -----------------------------------------------------------------------

    def _current_token(self) -> str | None:
        with self._token_lock:
            return self._token

    def _send(self, request: _Request, token: str | None) -> requests.Response:
        headers = dict(request.headers)
        if token:
            headers[TOKEN_HEADER] = token
        started = time.monotonic()
        status: int | None = None
        try:
            response = self._session.request(
                request.method, self._settings.base_url + quote(request.path, safe="/"),
                params=request.params, data=request.body, headers=headers, auth=self._auth,
                timeout=(self._connect_cap(request.timeout), request.timeout),
                allow_redirects=False,
            )
            status = response.status_code
            return response
        except requests.RequestException as exc:
            raise _transport_error(exc, request, self._target,
                                   client_cert=self._settings.client_cert is not None) from None
        finally:
            self._observe(request, status, time.monotonic() - started)

    def _connect_cap(self, timeout: float) -> float:
        return timeout if self._connect_timeout is None else min(timeout, self._connect_timeout)

    def _observe(self, request: _Request, status: int | None, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(request.method, request.endpoint, status, seconds, request.watch)
        except Exception:  # a metrics bug must not turn into a Consul failure
            log.exception("request observer failed")

    def _rotated_token(self, used: str | None) -> str | None:
        """After a 403: the token file's new token if it changed, else None."""
        path = self._settings.token_file
        if not path:
            return None
        try:
            fresh = read_token_file(path)
        except (OSError, ValueError) as exc:
            log.warning("cannot re-read CONSUL_HTTP_TOKEN_FILE %s after a 403: %s",
                        path, exc.__class__.__name__)
            return None
        if fresh is None or fresh == used or not is_usable_token(fresh):
            return None
        with self._token_lock:
            self._token, self._token_source = fresh, "file"
        log.info("the token in CONSUL_HTTP_TOKEN_FILE changed; retrying once with it")
        return fresh

    # --- sorting answers ---------------------------------------------------------------

    def _judge(self, request: _Request, response: requests.Response,
               allow: Collection[int]) -> Reply:
        return sort_answer(request.method, request.endpoint, response.status_code,
                           response.headers, response.content, allow,
                           token_source=self.token_source, redact=self._redacted)

    def _redacted(self, text: str) -> str:
        token = self._current_token()
        return text.replace(token, "<redacted>") if token else text


def sort_answer(method: str, endpoint: str, status: int, headers: Mapping[str, str],
                content: bytes, allow: Collection[int] = (), *, token_source: str = "none",
                redact: Callable[[str], str] = lambda text: text) -> Reply:
    """A `Reply` for a 2xx (or allowed) answer; else the error the module docstring names."""
    where: dict[str, Any] = {"method": method, "endpoint": endpoint, "status": status}
    if 200 <= status < 300 or status in allow:
        return Reply(status, headers, content, method, endpoint)
    body = redact(_printable(content))
    if status == 403:
        raise ConsulDenied(f"permission denied (token from {token_source})", body=body, **where)
    if status == 429:
        raise ConsulUnavailable("rate limited", body=body, **where)
    if status >= 500:
        raise ConsulUnavailable("server error", body=body, **where)
    raise ConsulRejected("request rejected", body=body, **where)


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    endpoint: str
    params: Mapping[str, str] | None
    body: bytes | None
    headers: Mapping[str, str]
    timeout: float
    watch: bool = False


def _encode_body(data: bytes | None, json_body: Any) -> tuple[bytes | None, dict[str, str]]:
    # Consul wants a Content-Type whenever there is a body (hashicorp/consul#10011).
    if json_body is not None:
        return json.dumps(json_body).encode(), {"Content-Type": "application/json"}
    if data is not None:
        return data, {"Content-Type": "application/octet-stream"}
    return None, {}


def _basic_auth(http_auth: tuple[str, str] | None) -> HTTPBasicAuth | None:
    if http_auth is None:
        return None
    user, password = http_auth
    return HTTPBasicAuth(user.encode(), password.encode())  # UTF-8 on the wire, as in Go


def _printable(body: bytes) -> str:
    return body[: BODY_LIMIT * 4].decode("utf-8", errors="replace")[:BODY_LIMIT]


def _transport_error(exc: requests.RequestException, request: _Request,
                     target: str, client_cert: bool = False) -> ConsulError:
    where: dict[str, Any] = {"method": request.method, "endpoint": request.endpoint}
    cause = _describe_cause(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        hint = ""
        if not client_cert and "EOF" in cause:
            # TLS 1.3 servers that require a client certificate often just hang up.
            hint = " (the server may require a client certificate: set CONSUL_CLIENT_CERT" \
                   " and CONSUL_CLIENT_KEY)"
        return TlsError(f"TLS handshake failed: {cause}{hint}", **where)
    if isinstance(exc, requests.Timeout):
        return ConsulUnavailable(f"no answer within {request.timeout:g}s", **where)
    if isinstance(exc, requests.ConnectionError):
        return ConsulUnavailable(f"cannot reach Consul at {target}: {cause}", **where)
    return ConsulUnavailable(f"request failed: {cause}", **where)


def _describe_cause(exc: BaseException) -> str:
    """The innermost error's text: "[Errno 111] Connection refused", not urllib3's wrapping."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and exc.args:
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return " ".join(str(exc).split())[:BODY_LIMIT] or exc.__class__.__name__


# --- transports --------------------------------------------------------------------------


def _build_session(settings: ConsulSettings, pool_size: int) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    if settings.unix_socket is not None:
        session.mount("http+unix://", _UnixSocketAdapter(settings.unix_socket, pool_size))
    else:
        session.mount("http://", HTTPAdapter(pool_maxsize=pool_size))
        session.mount("https://", _TlsAdapter(settings, pool_size))
    return session


def build_ssl_context(settings: ConsulSettings) -> ssl.SSLContext:
    """The client TLS context Go's ``SetupTLSConfig`` would build from ``settings``."""
    try:
        if settings.ca_file:
            context = ssl.create_default_context(cafile=settings.ca_file)
        elif settings.ca_path:
            context = ssl.create_default_context(cadata=load_ca_directory(settings.ca_path))
        else:
            context = ssl.create_default_context()
        if settings.client_cert and settings.client_key:
            load_client_pair(context, settings.client_cert, settings.client_key)
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot set up TLS: {_describe_cause(exc)}") from None
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _TlsAdapter(HTTPAdapter):
    """HTTPS through one prepared SSL context, with an optional server-name override.

    requests' own ``verify``/``cert`` handling (certifi, ``REQUESTS_CA_BUNDLE``) is
    bypassed so it can neither add roots to the context nor switch verification off.
    """

    def __init__(self, settings: ConsulSettings, pool_size: int) -> None:
        self._tls_pool_kwargs: dict[str, Any] = {
            "ssl_context": build_ssl_context(settings),
            "cert_reqs": "CERT_REQUIRED" if settings.verify else "CERT_NONE",
        }
        if settings.tls_server_name:
            self._tls_pool_kwargs["server_hostname"] = settings.tls_server_name
            self._tls_pool_kwargs["assert_hostname"] = settings.tls_server_name
        super().__init__(pool_maxsize=pool_size)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        # Used for direct and proxied connections alike, so the override holds for both.
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        return host_params, dict(self._tls_pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Verification is fixed in the SSL context; ignore the per-request knobs."""


class _UnixSocketConnection(HTTPConnection):
    """An HTTP connection over AF_UNIX; the Host header stays ``localhost`` as in Go."""

    def __init__(self, host: str, port: int | None = None, *, socket_path: str,
                 **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(self, f"connecting to {self._socket_path} timed out") \
                from exc
        except OSError as exc:
            sock.close()
            raise NewConnectionError(self, f"cannot connect to {self._socket_path}: {exc}") \
                from exc
        return sock


class _UnixSocketPool(HTTPConnectionPool):
    ConnectionCls = _UnixSocketConnection


class _UnixSocketAdapter(HTTPAdapter):
    """Sends every ``http+unix://`` request to one socket, never through a proxy."""

    def __init__(self, socket_path: str, pool_size: int) -> None:
        super().__init__(pool_connections=1, pool_maxsize=pool_size)
        self._pool = _UnixSocketPool("localhost", maxsize=pool_size, socket_path=socket_path)

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None,
                                        cert: Any = None) -> HTTPConnectionPool:
        return self._pool

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        return request.path_url

    def close(self) -> None:
        self._pool.close()
        super().close()
