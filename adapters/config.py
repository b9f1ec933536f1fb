"""Configuration from the environment, validated all at once before any request.

``load_config(environ)`` turns the process environment into one frozen ``Config``.
Guarantees:

* Nothing here touches the network. Files named by variables (token file, CA
  file or directory, client certificate and key) are read once, here, so a missing
  or unusable file is reported at start, naming its variable.
* Every problem is collected; ``ConfigError.errors`` holds one line per problem,
  each naming the variable and quoting the offending value. Secrets (tokens, the
  HTTP basic-auth value) are never quoted, in errors or in ``repr``.
* Consul's own client variables follow the Go ``api`` client (``api/api.go``):
  address forms, scheme upgrade by ``CONSUL_HTTP_SSL`` (never a downgrade), token
  precedence ``CONSUL_HTTP_TOKEN_FILE`` > ``CONSUL_HTTP_TOKEN`` > ``CONSUL_TOKEN``,
  CA file over CA directory, client cert and key only as a pair, server name with
  its port stripped. Deliberate differences: an unparsable boolean is an error here
  (Go logs it and, for ``CONSUL_HTTP_SSL_VERIFY``, silently stops verifying); a path
  after a scheme-less ``host:port`` is a prefix too; credentials inside the address
  and TLS over a unix socket are refused; an empty CA directory is an error.
* The session TTL's lower bound is left to Consul (``session_ttl_min`` is agent
  configuration, 10s by default); its fixed 24h maximum is checked here.
* An empty variable counts as unset, except ``CONSUL_LEADER_LEADER_FILE`` (empty
  disables the file) and ``CONSUL_LEADER_PRIMARY_LABEL`` (empty is an error).
"""

from __future__ import annotations

import errno
import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from consul_leader.adapters.durations import (
    HOUR,
    MINUTE,
    SECOND,
    DurationError,
    format_duration_ns,
    parse_duration_ns,
)

DEFAULT_CONSUL_ADDRESS = "127.0.0.1:8500"
DEFAULT_SERVICE_NAME = "consul-leader"
DEFAULT_LISTEN = ":9500"
PUBLISH_REGISTRATION = "registration"
PUBLISH_LABELS = "labels"
MAX_SESSION_TTL_NS = 24 * HOUR  # Consul's SessionTTLMax
MAX_LOCK_DELAY_NS = 60 * SECOND  # Consul's MaxLockDelay: it caps silently, we refuse
DURATION_HINT = "use Go syntax such as 15s or 1m30s"
# Switchover and priorities (issue 12).
DEFAULT_PRIORITY = 1
DEFAULT_HOLD_OFF = "5s"
MAX_HOLD_OFF_NS = 60 * SECOND  # the hint a switchover leaves is honoured at most this long
_ON_OFF = {"on": True, "off": False}

# strconv.ParseBool's complete vocabulary.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_LOG_LEVELS = {
    "error": "error",
    "warn": "warn",
    "warning": "warn",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}
_LOG_FORMATS = ("logfmt", "json")
_BARE_SECONDS = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# What an HTTP header value may carry without being mangled or refused.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Variable:
    """One environment variable, for ``--help`` and the README table."""

    name: str
    default_text: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("CONSUL_LEADER_SERVICE_NAME", "consul-leader",
             "Name of the election: session name, the lock key's folder when the key is not "
             "set explicitly, and which of the allocation's services to publish for (those "
             "with this name, if any; else all of them)."),
    Variable("CONSUL_LEADER_KEY",
             "/consul-leader/lock, or /consul-leader/<service name>/lock when "
             "CONSUL_LEADER_SERVICE_NAME is set",
             "KV key to lock on; the leading slash is only a separator."),
    Variable("CONSUL_LEADER_PRIMARY_LABEL", "primary",
             "Tag of the leader's published instance(s)."),
    Variable("CONSUL_LEADER_REPLICA_LABEL", "(empty: none)",
             "Tag of the other instances; must differ from the primary tag."),
    Variable("CONSUL_LEADER_TTL", "15s",
             "Session TTL (Go duration, at most 24h); also the local lease: a leader that "
             "cannot renew within it steps down."),
    Variable("CONSUL_LEADER_SLEEP", "10",
             "Renew interval: seconds as a bare number, or a Go duration; must be below the "
             "TTL."),
    Variable("CONSUL_LEADER_LOCKDELAY", "0s",
             "Session lock-delay after an invalidation (Go duration, 0s to 60s)."),
    Variable("CONSUL_LEADER_LOG_LEVEL", "warn", "error, warn, info or debug."),
    Variable("CONSUL_LEADER_LOG_FORMAT", "logfmt", "logfmt or json."),
    Variable("CONSUL_LEADER_SERVICE_IDS", "(empty: the services of NOMAD_ALLOC_ID)",
             "Comma-separated Consul service IDs to publish for (the targets)."),
    Variable("CONSUL_LEADER_LEADER_FILE",
             "$NOMAD_ALLOC_DIR/$NOMAD_ALLOC_ID when both are set",
             "File written while leader and removed otherwise; empty disables it."),
    Variable("CONSUL_LEADER_LISTEN", DEFAULT_LISTEN,
             "host:port of /metrics, /livez, /readyz, /healthz, /primary, /replica and "
             "/status. :port listens on every interface, IPv6 and IPv4 (IPv4 only where the "
             "host has no IPv6); a host or address listens there only; off disables."),
    Variable("CONSUL_LEADER_ON_PROMOTE", "(none)", "Shell command run on becoming leader."),
    Variable("CONSUL_LEADER_ON_DEMOTE", "(none)", "Shell command run on stepping down."),
    Variable("CONSUL_LEADER_HOOK_TIMEOUT", "10s", "Time limit for each hook command."),
    Variable("CONSUL_LEADER_HEALTH_CHECK", "true",
             "Keep TTL checks passing only while the state is confirmed: one on each published "
             "instance (a stale leader never looks healthy) and one on the sidecar's own "
             "consul-leader service; the session is bound to them (crash failover at TTL)."),
    Variable("CONSUL_LEADER_WATCH_WAIT", "5m", "Blocking-query wait (1s to 10m)."),
    Variable("CONSUL_LEADER_PUBLISH", "registration",
             "How the role is published. registration: an instance of the sidecar's own per "
             "target service (ID consul-leader-<alloc>-<target ID>) with the target's name, "
             "address and port, the role label and the target's tags, Meta, an alias check on "
             "the target and the role TTL check; nothing is written into the target's own "
             "registration. labels: the seed's way, the role label on the target service "
             "itself (no Meta, no checks there; see the README for its hazards under Nomad)."),
    Variable("CONSUL_LEADER_PUBLISHED_NAME", "(the target service's name)",
             "Service name of the published instances (registration only), e.g. db while "
             "Nomad registers the task as db-task."),
    Variable("CONSUL_LEADER_NODE", "(the local agent's node)",
             "Consul node for the session; with health checks on, it must be the local "
             "agent's node (checked with /v1/agent/self; another node exits 2)."),
    # Switchover, the HTTP write paths and priorities (issue 12).
    Variable("CONSUL_LEADER_HTTP_WRITES", "off",
             "on enables the HTTP write paths (POST /switchover); off answers them 403. Reads "
             "stay open either way."),
    Variable("CONSUL_LEADER_HTTP_TOKEN_FILE", "(none: writes, when on, need no token)",
             "File holding the bearer token that write paths require (Authorization: Bearer "
             "<token>); read at start and again whenever the file changes."),
    Variable("CONSUL_LEADER_PRIORITY", str(DEFAULT_PRIORITY),
             "Integer >= 0. When the lock is free, healthy instances of higher priority go "
             "first; 0 never leads (only follows)."),
    Variable("CONSUL_LEADER_SWITCHOVER_HOLD_OFF", DEFAULT_HOLD_OFF,
             "How long a leader that hands over stays out of the race, unless a switchover "
             "request says otherwise (Go duration, 0s to 1m)."),
    # Issue 12: health-aware leadership.
    Variable("CONSUL_LEADER_HEALTH_GATE", "false",
             "true: lead only while the application is healthy. The session is also bound to "
             "the alias check on each published instance, and the sidecar watches the "
             "targets' checks (node and service maintenance included): a leader whose "
             "application goes critical releases the key, a critical instance takes no "
             "session until it is healthy again. Needs CONSUL_LEADER_PUBLISH=registration "
             "and CONSUL_LEADER_HEALTH_CHECK=true."),
    Variable("CONSUL_HTTP_ADDR", DEFAULT_CONSUL_ADDRESS,
             "Consul agent: host:port, http://host:port[/prefix], https://host:port[/prefix] "
             "or unix:///path/to/socket."),
    Variable("CONSUL_HTTP_TOKEN_FILE", "(none)",
             "File holding the ACL token; wins over CONSUL_HTTP_TOKEN; re-read after a 403."),
    Variable("CONSUL_HTTP_TOKEN", "(none)", "ACL token."),
    Variable("CONSUL_TOKEN", "(none)", "Legacy ACL token variable, used last."),
    Variable("CONSUL_HTTP_AUTH", "(none)", "HTTP basic auth, user or user:password."),
    Variable("CONSUL_HTTP_SSL", "false", "true switches http to https (never the reverse)."),
    Variable("CONSUL_HTTP_SSL_VERIFY", "true",
             "false disables certificate verification; anything unparsable is an error."),
    Variable("CONSUL_CACERT", "(system roots)", "PEM CA bundle file; wins over CONSUL_CAPATH."),
    Variable("CONSUL_CAPATH", "(system roots)",
             "Directory whose files (recursively) are all PEM CA certificates."),
    Variable("CONSUL_CLIENT_CERT", "(none)", "PEM client certificate; needs CONSUL_CLIENT_KEY."),
    Variable("CONSUL_CLIENT_KEY", "(none)", "PEM client key (unencrypted)."),
    Variable("CONSUL_TLS_SERVER_NAME", "(the address's host)",
             "Name sent as SNI and checked on the server certificate; a :port is dropped."),
    Variable("NOMAD_ALLOC_ID", "(set by Nomad)", "Allocation whose services are tagged."),
    Variable("NOMAD_ALLOC_DIR", "(set by Nomad)", "Folder of the default leader file."),
)


class ConfigError(Exception):
    """The environment is unusable; ``errors`` has one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class ConsulSettings:
    """How to reach and authenticate to the Consul agent."""

    base_url: str
    unix_socket: str | None
    token: str | None = field(repr=False)
    token_file: str | None
    http_auth: tuple[str, str] | None = field(repr=False)
    ca_file: str | None
    ca_path: str | None
    client_cert: str | None
    client_key: str | None
    verify: bool
    tls_server_name: str | None
    token_source: str = "none"  # "file", "env" or "none": where `token` came from


@dataclass(frozen=True)
class Config:
    """Everything the sidecar needs, validated. Durations are in seconds."""

    consul: ConsulSettings
    service_name: str
    key: str
    kv_path: str
    primary_label: str
    replica_label: str | None
    ttl: float
    ttl_text: str
    renew_interval: float
    lock_delay: float
    lock_delay_text: str
    log_level: str
    log_format: str
    service_ids: tuple[str, ...]
    alloc_id: str | None
    alloc_dir: str | None
    leader_file: str | None
    listen: tuple[str, int] | None
    on_promote: str | None
    on_demote: str | None
    hook_timeout: float
    health_check: bool
    publish: str  # PUBLISH_REGISTRATION or PUBLISH_LABELS
    published_name: str | None
    watch_wait: float
    session_name: str
    node_name: str | None
    # Switchover, the HTTP write paths and priorities (issue 12).
    http_writes: bool = False
    http_token_file: str | None = None
    priority: int = DEFAULT_PRIORITY
    hold_off: float = 5.0  # DEFAULT_HOLD_OFF, in seconds
    # Issue 12: health-aware leadership (off unless asked for: see the README for why).
    health_gate: bool = False


def load_config(environ: Mapping[str, str]) -> Config:
    """Read and validate every variable; raise ``ConfigError`` listing all problems."""
    env = _EnvReader(environ)
    consul = _read_consul_settings(env)
    service_name = env.get("CONSUL_LEADER_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    key, kv_path = _read_key(env, service_name)
    primary_label, replica_label = _read_labels(env)
    ttl_ns, renew_ns = _read_ttl_and_sleep(env)
    lock_delay_ns = env.duration("CONSUL_LEADER_LOCKDELAY", "0s", 0, MAX_LOCK_DELAY_NS,
                                 "Consul caps lock-delay at 60s")
    alloc_id = env.get("NOMAD_ALLOC_ID")
    alloc_dir = env.get("NOMAD_ALLOC_DIR")
    publish = env.choice("CONSUL_LEADER_PUBLISH", PUBLISH_REGISTRATION,
                         {name: name for name in (PUBLISH_REGISTRATION, PUBLISH_LABELS)})
    config = Config(
        consul=consul,
        service_name=service_name,
        key=key,
        kv_path=kv_path,
        primary_label=primary_label,
        replica_label=replica_label,
        ttl=ttl_ns / SECOND,
        ttl_text=format_duration_ns(ttl_ns),
        renew_interval=renew_ns / SECOND,
        lock_delay=lock_delay_ns / SECOND,
        lock_delay_text=format_duration_ns(lock_delay_ns),
        log_level=env.choice("CONSUL_LEADER_LOG_LEVEL", "warn", _LOG_LEVELS),
        log_format=env.choice("CONSUL_LEADER_LOG_FORMAT", "logfmt",
                              {name: name for name in _LOG_FORMATS}),
        service_ids=_read_service_ids(env),
        alloc_id=alloc_id,
        alloc_dir=alloc_dir,
        leader_file=_read_leader_file(env, alloc_dir, alloc_id),
        listen=_read_listen(env),
        on_promote=env.get("CONSUL_LEADER_ON_PROMOTE"),
        on_demote=env.get("CONSUL_LEADER_ON_DEMOTE"),
        hook_timeout=env.duration("CONSUL_LEADER_HOOK_TIMEOUT", "10s", 1, None) / SECOND,
        health_check=env.boolean("CONSUL_LEADER_HEALTH_CHECK", True),
        publish=publish,
        published_name=_read_published_name(env, publish),
        watch_wait=env.duration("CONSUL_LEADER_WATCH_WAIT", "5m", SECOND, 10 * MINUTE,
                                "Consul's default max_query_time") / SECOND,
        session_name=service_name,
        node_name=env.get("CONSUL_LEADER_NODE"),
    )
    config = replace(config, **_read_switchover(env))
    config = replace(config, health_gate=_read_health_gate(env, config))
    if env.errors:
        raise ConfigError(env.errors)
    return config


# --- reading helpers ---------------------------------------------------------------------


class _EnvReader:
    """Reads variables, records one error line per problem, and remembers which failed.

    Every typed reader returns a usable fallback on error so parsing can go on and
    report everything; ``failed()`` lets cross-checks skip values that are fallbacks.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.errors: list[str] = []
        self._failed: set[str] = set()

    def raw(self, name: str) -> str | None:
        """The value exactly as set (``""`` included), or None when absent."""
        return self._environ.get(name)

    def get(self, name: str) -> str | None:
        """The value, with an empty string treated as unset."""
        return self.raw(name) or None

    def fail(self, name: str, value: str | None, reason: str, *, secret: bool = False) -> None:
        self._failed.add(name)
        if secret or value is None:
            shown = " (value not shown)" if secret else ""
            self.errors.append(f"{name}: {reason}{shown}")
        else:
            self.errors.append(f"{name}={show(value)}: {reason}")

    def failed(self, *names: str) -> bool:
        return any(name in self._failed for name in names)

    def boolean(self, name: str, default: bool) -> bool:
        text = self.get(name)
        if text is None:
            return default
        if text in _GO_TRUE:
            return True
        if text in _GO_FALSE:
            return False
        self.fail(name, text, "not a boolean (use true or false)")
        return default

    def choice(self, name: str, default: str, allowed: Mapping[str, str]) -> str:
        text = self.get(name)
        if text is None:
            return default
        chosen = allowed.get(text.lower())
        if chosen is None:
            options = ", ".join(dict.fromkeys(allowed.values()))
            self.fail(name, text, f"must be one of {options}")
            return default
        return chosen

    def duration(self, name: str, default: str, minimum: int, maximum: int | None,
                 why_maximum: str = "") -> int:
        """A Go duration in nanoseconds, within ``[minimum, maximum]``."""
        text = self.get(name) or default
        try:
            value = parse_duration_ns(text)
        except DurationError as exc:
            self.fail(name, text, _duration_problem(exc))
            return parse_duration_ns(default)
        return self._within(name, text, value, minimum, maximum, why_maximum, default)

    def _within(self, name: str, text: str, value: int, minimum: int, maximum: int | None,
                why_maximum: str, default: str) -> int:
        if value < minimum:
            bound = "above 0s" if minimum == 1 else f"at least {format_duration_ns(minimum)}"
            self.fail(name, text, f"must be {bound}")
            return parse_duration_ns(default)
        if maximum is not None and value > maximum:
            because = f" ({why_maximum})" if why_maximum else ""
            self.fail(name, text, f"must be at most {format_duration_ns(maximum)}{because}")
            return parse_duration_ns(default)
        return value


def show(value: str) -> str:
    """Quote a value for a one-line message (control characters escaped)."""
    return json.dumps(value, ensure_ascii=False)


def _duration_problem(exc: DurationError) -> str:
    if exc.reason == "invalid duration":
        return f"not a duration ({DURATION_HINT})"
    return f"not a duration: {exc.reason} ({DURATION_HINT})"


def _describe(exc: OSError | ValueError) -> str:
    """A short cause for a file problem, without the path (the message quotes it)."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# --- Consul client settings --------------------------------------------------------------


def _read_consul_settings(env: _EnvReader) -> ConsulSettings:
    force_tls = env.boolean("CONSUL_HTTP_SSL", False)
    base_url, unix_socket = _read_address(env, force_tls)
    token_file = env.get("CONSUL_HTTP_TOKEN_FILE")
    token, token_source = _read_token(env, token_file)
    ca_file, ca_path = _read_ca(env)
    client_cert, client_key = _read_client_pair(env)
    return ConsulSettings(
        base_url=base_url,
        unix_socket=unix_socket,
        token=token,
        token_file=token_file,
        http_auth=_read_http_auth(env),
        ca_file=ca_file,
        ca_path=ca_path,
        client_cert=client_cert,
        client_key=client_key,
        verify=env.boolean("CONSUL_HTTP_SSL_VERIFY", True),
        tls_server_name=_read_server_name(env),
        token_source=token_source,
    )


def _read_address(env: _EnvReader, force_tls: bool) -> tuple[str, str | None]:
    """``CONSUL_HTTP_ADDR`` as (base URL, unix socket path), following Go's ``NewClient``."""
    name = "CONSUL_HTTP_ADDR"
    text = env.get(name) or DEFAULT_CONSUL_ADDRESS
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "http", text
    if scheme == "unix":
        return _unix_address(env, text, rest, force_tls)
    if scheme not in ("http", "https"):
        env.fail(name, text, f"Unknown protocol scheme: {scheme}")
        return "http://" + DEFAULT_CONSUL_ADDRESS, None
    if force_tls:
        scheme = "https"  # CONSUL_HTTP_SSL upgrades; "http://" never downgrades it
    if "@" in rest:  # refuse, without echoing, what is probably user:password@host
        env.fail(name, None, "credentials in the address are not supported; use "
                 "CONSUL_HTTP_AUTH", secret=True)
        return "http://" + DEFAULT_CONSUL_ADDRESS, None
    host, _, prefix = rest.partition("/")
    problem = _host_problem(scheme, host) or _prefix_problem(prefix)
    if problem:
        env.fail(name, text, problem)
        return "http://" + DEFAULT_CONSUL_ADDRESS, None
    prefix = prefix.strip("/")
    return f"{scheme}://{host}" + (f"/{prefix}" if prefix else ""), None


def _unix_address(env: _EnvReader, text: str, path: str,
                  force_tls: bool) -> tuple[str, str | None]:
    if not path:
        env.fail("CONSUL_HTTP_ADDR", text, "no socket path after unix://")
    elif force_tls:
        env.fail("CONSUL_HTTP_SSL", env.get("CONSUL_HTTP_SSL"),
                 f"TLS over a unix socket (CONSUL_HTTP_ADDR={show(text)}) is not supported")
    return "http+unix://" + quote(path, safe=""), path or None


def _host_problem(scheme: str, host: str) -> str | None:
    try:
        parts = urlsplit(f"{scheme}://{host}")
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"not a valid host:port ({exc})"
    if not parts.hostname:
        return "no host name"
    return None


def _prefix_problem(prefix: str) -> str | None:
    if "?" in prefix or "#" in prefix:
        return "the path prefix must not contain a query or fragment"
    return None


def _read_token(env: _EnvReader, token_file: str | None) -> tuple[str | None, str]:
    """The effective token and where it came from: file > CONSUL_HTTP_TOKEN > CONSUL_TOKEN."""
    if token_file:
        try:
            token = read_token_file(token_file)
        except (OSError, ValueError) as exc:
            env.fail("CONSUL_HTTP_TOKEN_FILE", token_file,
                     f"cannot read the token file: {_describe(exc)}")
            token = None
        if token is not None:
            if not is_usable_token(token):
                env.fail("CONSUL_HTTP_TOKEN_FILE", token_file, _BAD_TOKEN)
            return token, "file"
    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_TOKEN"):
        token = env.get(name)
        if token is not None:
            if not is_usable_token(token):
                env.fail(name, None, _BAD_TOKEN, secret=True)
            return token, "env"
    return None, "none"


_BAD_TOKEN = "the token may hold only visible ASCII characters"


def is_usable_token(token: str) -> bool:
    """Whether ``token`` can travel in an HTTP header unchanged."""
    return _HEADER_SAFE.fullmatch(token) is not None


def read_token_file(path: str) -> str | None:
    """The token in ``path`` with surrounding whitespace removed; None if the file is blank.

    Raises OSError when the file cannot be read and ValueError when it is not UTF-8.
    """
    with open(path, "rb") as handle:
        token = handle.read().decode("utf-8").strip()
    return token or None


def _read_http_auth(env: _EnvReader) -> tuple[str, str] | None:
    text = env.get("CONSUL_HTTP_AUTH")
    if text is None:
        return None
    user, _, password = text.partition(":")  # split on the first colon, as Go does
    return user, password


def _read_ca(env: _EnvReader) -> tuple[str | None, str | None]:
    ca_file = env.get("CONSUL_CACERT")
    ca_path = env.get("CONSUL_CAPATH")
    if ca_file:
        _check_ca_file(env, ca_file)
    elif ca_path:
        try:
            load_ca_directory(ca_path)
        except (OSError, ValueError) as exc:
            env.fail("CONSUL_CAPATH", ca_path, _describe(exc))
    return ca_file, ca_path


def _check_ca_file(env: _EnvReader, path: str) -> None:
    try:
        _check_pem_certificates(_read_text(path))
    except (OSError, ValueError) as exc:
        env.fail("CONSUL_CACERT", path, f"cannot load a CA certificate: {_describe(exc)}")


def load_ca_directory(path: str) -> str:
    """Every certificate under ``path`` (recursively) as one PEM bundle, as Go loads CAPath.

    OpenSSL's own ``capath`` only finds c_rehash-named files, so the directory is read
    here instead. Raises OSError or ValueError naming the offending file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory")
    bundle: list[str] = []
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        for file_name in sorted(files):
            file_path = os.path.join(folder, file_name)
            if os.path.isdir(file_path):
                continue  # a symlink to a folder: Walk does not follow it
            bundle.append(_read_ca_member(file_path))
    if not bundle:
        raise ValueError("the directory holds no certificates")
    return "\n".join(bundle)


def _read_ca_member(file_path: str) -> str:
    try:
        text = _read_text(file_path)
        _check_pem_certificates(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load {show(file_path)}: {_describe(exc)}") from exc
    return text


def _read_text(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="replace")


def _check_pem_certificates(text: str) -> None:
    """Raise ValueError/ssl.SSLError unless ``text`` holds at least one PEM certificate."""
    if "-----BEGIN" not in text:
        raise ValueError("no PEM certificate found")
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)


def _read_client_pair(env: _EnvReader) -> tuple[str | None, str | None]:
    cert = env.get("CONSUL_CLIENT_CERT")
    key = env.get("CONSUL_CLIENT_KEY")
    if (cert is None) != (key is None):
        given, missing = ("CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY") if cert else (
            "CONSUL_CLIENT_KEY", "CONSUL_CLIENT_CERT")
        env.fail(given, cert or key,
                 f"both client cert and client key must be provided ({missing} is not set)")
    elif cert is not None and key is not None:
        try:
            load_client_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert, key)
        except (OSError, ValueError) as exc:
            env.fail("CONSUL_CLIENT_CERT", cert,
                     f"cannot load it with CONSUL_CLIENT_KEY={show(key)}: {_describe(exc)}")
    return cert, key


def load_client_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load a client certificate and key; an encrypted key is refused, never prompted for."""
    context.load_cert_chain(cert, key, password=_refuse_key_password)


def _refuse_key_password() -> bytes:
    raise ValueError("encrypted client keys are not supported")


def _read_server_name(env: _EnvReader) -> str | None:
    """``CONSUL_TLS_SERVER_NAME`` with any ``:port`` removed, as Go's SetupTLSConfig does."""
    text = env.get("CONSUL_TLS_SERVER_NAME")
    if text is None:
        return None
    name = text
    if text.rfind(":") > text.rfind("]"):
        name = text.rpartition(":")[0]
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        elif ":" in name:
            env.fail("CONSUL_TLS_SERVER_NAME", text, "too many colons (bracket an IPv6 address)")
            return None
    if not name:
        env.fail("CONSUL_TLS_SERVER_NAME", text, "no host name")
        return None
    return name


# --- election settings -------------------------------------------------------------------


def _read_key(env: _EnvReader, service_name: str) -> tuple[str, str]:
    """The lock key as given and its KV path (leading slashes dropped)."""
    explicit = env.get("CONSUL_LEADER_KEY")
    if explicit is not None:
        key = explicit
    elif env.get("CONSUL_LEADER_SERVICE_NAME"):
        key = f"/consul-leader/{service_name}/lock"
    else:
        key = "/consul-leader/lock"
    kv_path = key.lstrip("/")
    problem = _kv_path_problem(kv_path)
    if problem and explicit is not None:
        env.fail("CONSUL_LEADER_KEY", key, problem)
    elif problem:
        env.fail("CONSUL_LEADER_SERVICE_NAME", service_name,
                 f"gives the lock key {show(key)}, which is unusable: {problem}")
    return key, kv_path


def _kv_path_problem(kv_path: str) -> str | None:
    if not kv_path:
        return "the key is empty once its leading slashes are removed"
    if any(segment in ("", ".", "..") for segment in kv_path.split("/")):
        # Consul's HTTP mux redirects unclean paths instead of serving them.
        return 'key segments must not be empty, "." or ".."'
    return None


def _read_labels(env: _EnvReader) -> tuple[str, str | None]:
    primary = env.raw("CONSUL_LEADER_PRIMARY_LABEL")
    if primary is None:
        primary = "primary"
    elif not primary.strip():
        env.fail("CONSUL_LEADER_PRIMARY_LABEL", primary, "must not be empty")
    replica = env.get("CONSUL_LEADER_REPLICA_LABEL")
    if replica is not None and replica == primary:
        env.fail("CONSUL_LEADER_REPLICA_LABEL", replica,
                 f"must differ from CONSUL_LEADER_PRIMARY_LABEL={show(primary)}")
    return primary, replica


def _read_ttl_and_sleep(env: _EnvReader) -> tuple[int, int]:
    """TTL and renew interval in nanoseconds; the interval must be below the TTL."""
    ttl = env.duration("CONSUL_LEADER_TTL", "15s", 1, MAX_SESSION_TTL_NS,
                       "Consul's maximum session TTL")
    sleep = _read_sleep(env)
    if not env.failed("CONSUL_LEADER_TTL", "CONSUL_LEADER_SLEEP") and sleep >= ttl:
        env.fail("CONSUL_LEADER_TTL", env.get("CONSUL_LEADER_TTL") or "15s",
                 "TTL must be above SLEEP "
                 f"(CONSUL_LEADER_SLEEP={show(env.get('CONSUL_LEADER_SLEEP') or '10')})")
    return ttl, sleep


def _read_sleep(env: _EnvReader) -> int:
    """``CONSUL_LEADER_SLEEP``: bare seconds as in the seed (``10``), or a Go duration."""
    name, default = "CONSUL_LEADER_SLEEP", "10"
    text = env.get(name) or default
    if _BARE_SECONDS.fullmatch(text):
        value = int(Decimal(text) * SECOND)
    else:
        try:
            value = parse_duration_ns(text)
        except DurationError:
            env.fail(name, text, "not a number of seconds or a duration (such as 10 or 10s)")
            return int(default) * SECOND
    if value <= 0:
        env.fail(name, text, "must be above 0")
        return int(default) * SECOND
    return value


# --- sidecar settings --------------------------------------------------------------------


def _read_service_ids(env: _EnvReader) -> tuple[str, ...]:
    text = env.get("CONSUL_LEADER_SERVICE_IDS") or ""
    ids = (part.strip() for part in text.split(","))
    return tuple(dict.fromkeys(service_id for service_id in ids if service_id))


def _read_leader_file(env: _EnvReader, alloc_dir: str | None,
                      alloc_id: str | None) -> str | None:
    name = "CONSUL_LEADER_LEADER_FILE"
    given = env.raw(name)
    if given == "":
        return None  # explicitly disabled
    if given is None:
        if not (alloc_dir and alloc_id):
            return None
        path = os.path.join(alloc_dir, alloc_id)
    else:
        path = given
    problem = _leader_file_problem(path)
    if problem:
        origin = "" if given else " (default from NOMAD_ALLOC_DIR and NOMAD_ALLOC_ID)"
        env.fail(name, path, problem + origin)
    return path


def _leader_file_problem(path: str) -> str | None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"its directory {show(folder)} does not exist"
    if os.path.isdir(path):
        return "is a directory"
    return None


def _read_published_name(env: _EnvReader, publish: str) -> str | None:
    name = env.get("CONSUL_LEADER_PUBLISHED_NAME")
    if name is not None and publish != PUBLISH_REGISTRATION:
        env.fail("CONSUL_LEADER_PUBLISHED_NAME", name,
                 f"only with CONSUL_LEADER_PUBLISH={PUBLISH_REGISTRATION} (labels go on the "
                 "target service itself, under its own name)")
    return name


def _read_health_gate(env: _EnvReader, config: Config) -> bool:
    """The gate binds the session to the alias check of our own instances: there are none in
    the labels mode, and without health checks the session binds to no check at all."""
    name = "CONSUL_LEADER_HEALTH_GATE"
    gate = env.boolean(name, False)
    if gate and config.publish != PUBLISH_REGISTRATION:
        env.fail(name, env.get(name), f"only with CONSUL_LEADER_PUBLISH={PUBLISH_REGISTRATION} "
                 "(in the labels mode there is no alias check of ours to bind the session to)")
    elif gate and not config.health_check:
        env.fail(name, env.get(name), "needs CONSUL_LEADER_HEALTH_CHECK=true (without it the "
                 "session is bound to no check)")
    return gate


def _read_listen(env: _EnvReader) -> tuple[str, int] | None:
    """``host:port``, ``:port`` (host ``""``: every interface), ``[v6]:port``, or ``off``."""
    name = "CONSUL_LEADER_LISTEN"
    text = env.get(name) or DEFAULT_LISTEN
    if text.lower() == "off":
        return None
    host, separator, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        separator = ""  # an unbracketed IPv6 address is ambiguous
    if not separator or not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        env.fail(name, text, "expected host:port, :port, [ipv6]:port or off")
        return None
    return host, int(port_text)


# --- switchover, the HTTP write paths and priorities (issue 12) -------------------------------


def _read_switchover(env: _EnvReader) -> dict[str, Any]:
    enabled = _read_on_off(env, "CONSUL_LEADER_HTTP_WRITES")
    token_file = env.get("CONSUL_LEADER_HTTP_TOKEN_FILE")
    if token_file is not None:
        problem = http_token_file_problem(token_file)
        if problem:
            env.fail("CONSUL_LEADER_HTTP_TOKEN_FILE", token_file, problem)
    return {
        "http_writes": enabled,
        "http_token_file": token_file,
        "priority": _read_priority(env),
        "hold_off": env.duration("CONSUL_LEADER_SWITCHOVER_HOLD_OFF", DEFAULT_HOLD_OFF, 0,
                                 MAX_HOLD_OFF_NS, "a bounded hold-off") / SECOND,
    }


def _read_on_off(env: _EnvReader, name: str) -> bool:
    text = env.get(name)
    if text is None:
        return False
    if text.lower() in _ON_OFF:
        return _ON_OFF[text.lower()]
    if text in _GO_TRUE or text in _GO_FALSE:
        return text in _GO_TRUE
    env.fail(name, text, "must be on or off")
    return False


def _read_priority(env: _EnvReader) -> int:
    text = env.get("CONSUL_LEADER_PRIORITY")
    if text is None:
        return DEFAULT_PRIORITY
    if not text.isascii() or not text.isdigit():
        env.fail("CONSUL_LEADER_PRIORITY", text, "must be an integer >= 0 (0: never lead)")
        return DEFAULT_PRIORITY
    return int(text)


def http_token_file_problem(path: str) -> str | None:
    """Why the bearer token file cannot be used, or None (shared with the CLI)."""
    try:
        token = read_token_file(path)
    except (OSError, ValueError) as exc:
        return f"cannot read the token file: {_describe(exc)}"
    if token is None:
        return "the token file is empty"
    if not is_usable_token(token):
        return _BAD_TOKEN
    return None


def listen_text(listen: tuple[str, int]) -> str:
    """``Config.listen`` written back the way ``CONSUL_LEADER_LISTEN`` takes it."""
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
