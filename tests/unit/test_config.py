"""load_config: every knob's default, valid forms and errors; errors name their variable."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from consul_leader.adapters.config import (
    VARIABLES,
    Config,
    ConfigError,
    listen_text,
    load_config,
)
from tests.unit.test_consul_client import Pki, make_pki

SECRET = "b7c1e2f0-secret-token-value"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def load(**env: str) -> Config:
    return load_config(env)


def errors(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    return info.value.errors


def error(**env: str) -> str:
    """The single error ``env`` produces."""
    found = errors(**env)
    assert len(found) == 1, found
    return found[0]


# --- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    config = load()

    assert config.consul.base_url == "http://127.0.0.1:8500"
    assert (config.consul.unix_socket, config.consul.token, config.consul.token_file) == (
        None, None, None)
    assert (config.consul.http_auth, config.consul.ca_file, config.consul.ca_path) == (
        None, None, None)
    assert (config.consul.client_cert, config.consul.client_key) == (None, None)
    assert (config.consul.verify, config.consul.tls_server_name) == (True, None)
    assert config.consul.token_source == "none"
    assert (config.service_name, config.session_name) == ("consul-leader", "consul-leader")
    assert (config.key, config.kv_path) == ("/consul-leader/lock", "consul-leader/lock")
    assert (config.primary_label, config.replica_label) == ("primary", None)
    assert (config.ttl, config.ttl_text, config.renew_interval) == (15.0, "15s", 10.0)
    assert (config.lock_delay, config.lock_delay_text) == (0.0, "0s")
    assert (config.log_level, config.log_format) == ("warn", "logfmt")
    assert (config.service_ids, config.alloc_id, config.alloc_dir) == ((), None, None)
    assert (config.leader_file, config.listen) == (None, ("", 9500))  # every interface
    assert (config.on_promote, config.on_demote, config.hook_timeout) == (None, None, 10.0)
    assert (config.health_check, config.watch_wait, config.node_name) == (True, 300.0, None)


def test_empty_variables_count_as_unset() -> None:
    names = [variable.name for variable in VARIABLES]
    blank = {name: "" for name in names if name != "CONSUL_LEADER_PRIMARY_LABEL"}

    assert load_config(blank) == load()


# --- CONSUL_HTTP_ADDR and CONSUL_HTTP_SSL ---------------------------------------------------


@pytest.mark.parametrize(
    ("address", "ssl", "base_url"),
    [
        ("consul:8500", None, "http://consul:8500"),
        ("10.0.0.5:8500", None, "http://10.0.0.5:8500"),
        ("[::1]:8500", None, "http://[::1]:8500"),
        ("consul.service.consul", None, "http://consul.service.consul"),
        ("http://consul:8500", None, "http://consul:8500"),
        ("https://consul:8501", None, "https://consul:8501"),
        ("consul:8501", "true", "https://consul:8501"),
        ("http://consul:8501", "true", "https://consul:8501"),  # upgraded by CONSUL_HTTP_SSL
        ("https://consul:8501", "false", "https://consul:8501"),  # never downgraded
        ("https://gw:443/consul", None, "https://gw:443/consul"),
        ("https://gw:443/consul/", None, "https://gw:443/consul"),
        ("http://gw/a/b", None, "http://gw/a/b"),
        ("gw:80/consul", None, "http://gw:80/consul"),
    ],
)
def test_http_address(address: str, ssl: str | None, base_url: str) -> None:
    env = {"CONSUL_HTTP_ADDR": address} | ({"CONSUL_HTTP_SSL": ssl} if ssl else {})

    settings = load_config(env).consul

    assert (settings.base_url, settings.unix_socket) == (base_url, None)


@pytest.mark.parametrize(
    ("address", "socket_path", "base_url"),
    [
        ("unix:///var/run/consul/consul.sock", "/var/run/consul/consul.sock",
         "http+unix://%2Fvar%2Frun%2Fconsul%2Fconsul.sock"),
        ("unix://run/consul.sock", "run/consul.sock", "http+unix://run%2Fconsul.sock"),
    ],
)
def test_unix_socket_address(address: str, socket_path: str, base_url: str) -> None:
    settings = load(CONSUL_HTTP_ADDR=address).consul

    assert (settings.unix_socket, settings.base_url) == (socket_path, base_url)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONSUL_HTTP_ADDR": "ftp://consul:21"},
         'CONSUL_HTTP_ADDR="ftp://consul:21": Unknown protocol scheme: ftp'),
        ({"CONSUL_HTTP_ADDR": "HTTP://consul:8500"},
         'CONSUL_HTTP_ADDR="HTTP://consul:8500": Unknown protocol scheme: HTTP'),
        ({"CONSUL_HTTP_ADDR": "http://"}, 'CONSUL_HTTP_ADDR="http://": no host name'),
        ({"CONSUL_HTTP_ADDR": "http://:8500"}, 'CONSUL_HTTP_ADDR="http://:8500": no host name'),
        ({"CONSUL_HTTP_ADDR": "consul:http"}, 'CONSUL_HTTP_ADDR="consul:http": not a valid'),
        ({"CONSUL_HTTP_ADDR": "consul:99999"}, 'CONSUL_HTTP_ADDR="consul:99999": not a valid'),
        ({"CONSUL_HTTP_ADDR": "http://gw/consul?x=1"}, "must not contain a query"),
        ({"CONSUL_HTTP_ADDR": "unix://"}, 'CONSUL_HTTP_ADDR="unix://": no socket path'),
        ({"CONSUL_HTTP_ADDR": "unix:///s.sock", "CONSUL_HTTP_SSL": "1"},
         'CONSUL_HTTP_SSL="1": TLS over a unix socket'),
    ],
)
def test_http_address_errors(env: dict[str, str], message: str) -> None:
    assert message in error(**env)


@pytest.mark.parametrize("address", [f"http://admin:{SECRET}@consul:8500",
                                     f"https://admin:{SECRET}/x@consul:8501",
                                     f"admin:{SECRET}@consul:8500"])
def test_credentials_in_the_address_are_refused_without_echo(address: str) -> None:
    message = error(CONSUL_HTTP_ADDR=address)

    assert message.startswith("CONSUL_HTTP_ADDR: credentials in the address")
    assert SECRET not in message


GO_TRUE = ["1", "t", "T", "TRUE", "true", "True"]
GO_FALSE = ["0", "f", "F", "FALSE", "false", "False"]
NOT_GO_BOOLS = ["yes", "no", "on", "off", "2", "TrUe", " true", "enabled"]


@pytest.mark.parametrize("text", GO_TRUE)
def test_ssl_true_forms(text: str) -> None:
    assert load(CONSUL_HTTP_SSL=text).consul.base_url == "https://127.0.0.1:8500"


@pytest.mark.parametrize("text", GO_FALSE)
def test_ssl_false_forms(text: str) -> None:
    assert load(CONSUL_HTTP_SSL=text).consul.base_url == "http://127.0.0.1:8500"


@pytest.mark.parametrize(
    "name", ["CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_LEADER_HEALTH_CHECK"])
@pytest.mark.parametrize("text", NOT_GO_BOOLS)
def test_booleans_outside_go_parsebool_are_errors(name: str, text: str) -> None:
    assert error(**{name: text}) == f'{name}="{text}": not a boolean (use true or false)'


@pytest.mark.parametrize(("text", "verify"), [(t, True) for t in GO_TRUE]
                         + [(f, False) for f in GO_FALSE])
def test_ssl_verify(text: str, verify: bool) -> None:
    assert load(CONSUL_HTTP_SSL_VERIFY=text).consul.verify is verify


# --- tokens and basic auth ------------------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "consul_token"
    path.write_text(f"\n  {SECRET}\t\n")
    return path


def test_token_file_wins_over_both_variables(token_file: Path) -> None:
    settings = load(CONSUL_HTTP_TOKEN_FILE=str(token_file), CONSUL_HTTP_TOKEN="env",
                    CONSUL_TOKEN="legacy").consul

    assert (settings.token, settings.token_file, settings.token_source) == (
        SECRET, str(token_file), "file")


def test_http_token_wins_over_legacy_variable() -> None:
    settings = load(CONSUL_HTTP_TOKEN="env", CONSUL_TOKEN="legacy").consul

    assert (settings.token, settings.token_source) == ("env", "env")


def test_legacy_token_variable_is_last() -> None:
    assert load(CONSUL_TOKEN="legacy").consul.token == "legacy"


def test_blank_token_file_is_ignored(tmp_path: Path) -> None:
    blank = tmp_path / "blank"
    blank.write_text(" \n")

    settings = load(CONSUL_HTTP_TOKEN_FILE=str(blank), CONSUL_HTTP_TOKEN="env").consul

    assert (settings.token, settings.token_file, settings.token_source) == (
        "env", str(blank), "env")


@pytest.mark.parametrize("make_path", [lambda tmp: tmp / "absent", lambda tmp: tmp])
def test_unreadable_token_file(tmp_path: Path, make_path: object) -> None:
    path = make_path(tmp_path)  # type: ignore[operator]

    message = error(CONSUL_HTTP_TOKEN_FILE=str(path), CONSUL_HTTP_TOKEN="env")

    assert message.startswith(f'CONSUL_HTTP_TOKEN_FILE="{path}": cannot read the token file')


@pytest.mark.parametrize("name", ["CONSUL_HTTP_TOKEN", "CONSUL_TOKEN"])
def test_token_that_cannot_travel_in_a_header(name: str) -> None:
    message = error(**{name: f"{SECRET}\nX-Injected: 1"})

    assert message.startswith(f"{name}: the token may hold only visible ASCII characters")
    assert SECRET not in message


def test_token_file_content_that_cannot_travel_in_a_header(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"{SECRET} two words")

    message = error(CONSUL_HTTP_TOKEN_FILE=str(path))

    assert message.startswith(f'CONSUL_HTTP_TOKEN_FILE="{path}": the token may hold only')
    assert SECRET not in message


@pytest.mark.parametrize(
    ("text", "pair"),
    [("ops", ("ops", "")), ("ops:pw", ("ops", "pw")), ("ops:p:w", ("ops", "p:w")),
     (":pw", ("", "pw"))],
)
def test_http_auth_splits_on_the_first_colon(text: str, pair: tuple[str, str]) -> None:
    assert load(CONSUL_HTTP_AUTH=text).consul.http_auth == pair


def test_secrets_never_show_in_errors_or_repr(token_file: Path) -> None:
    env = {"CONSUL_HTTP_TOKEN_FILE": str(token_file), "CONSUL_HTTP_TOKEN": SECRET,
           "CONSUL_TOKEN": SECRET, "CONSUL_HTTP_AUTH": f"ops:{SECRET}"}
    config = load_config(env)
    with pytest.raises(ConfigError) as info:
        load_config(env | {"CONSUL_HTTP_TOKEN_FILE": "", "CONSUL_HTTP_TOKEN": f"{SECRET} x",
                           "CONSUL_LEADER_TTL": "x"})

    texts = [repr(config), str(config), repr(config.consul), str(info.value),
             *info.value.errors]
    assert all(SECRET not in text for text in texts)
    assert len(info.value.errors) == 2


# --- TLS files ------------------------------------------------------------------------------


def test_ca_file(pki: Pki) -> None:
    assert load(CONSUL_CACERT=str(pki.ca)).consul.ca_file == str(pki.ca)


def test_ca_file_wins_over_ca_path(pki: Pki) -> None:
    settings = load(CONSUL_CACERT=str(pki.ca), CONSUL_CAPATH="/nonexistent").consul

    assert (settings.ca_file, settings.ca_path) == (str(pki.ca), "/nonexistent")


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file or directory"), ("not a certificate\n", "no PEM certificate"),
     ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "")],
)
def test_unusable_ca_file(tmp_path: Path, content: str | None, reason: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_text(content)

    message = error(CONSUL_CACERT=str(path))

    assert message.startswith(f'CONSUL_CACERT="{path}": cannot load a CA certificate: ')
    assert reason in message


def test_ca_file_that_is_a_directory(tmp_path: Path) -> None:
    assert error(CONSUL_CACERT=str(tmp_path)).startswith(f'CONSUL_CACERT="{tmp_path}": ')


def test_ca_path_loads_every_file_recursively(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "one.crt").write_bytes(pki.ca.read_bytes())
    (tmp_path / "sub" / "two").write_bytes(pki.other_ca.read_bytes())

    assert load(CONSUL_CAPATH=str(tmp_path)).consul.ca_path == str(tmp_path)


def test_ca_path_with_a_file_that_is_not_pem(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "good.crt").write_bytes(pki.ca.read_bytes())
    (tmp_path / "README").write_text("certificates live here\n")

    message = error(CONSUL_CAPATH=str(tmp_path))

    assert message.startswith(f'CONSUL_CAPATH="{tmp_path}": cannot load ')
    assert "README" in message


@pytest.mark.parametrize(("kind", "reason"), [("file", "not a directory"),
                                              ("absent", "No such file or directory"),
                                              ("empty", "the directory holds no certificates")])
def test_ca_path_that_is_not_a_usable_directory(pki: Pki, tmp_path: Path, kind: str,
                                                reason: str) -> None:
    path = {"file": pki.ca, "absent": tmp_path / "absent", "empty": tmp_path}[kind]

    assert error(CONSUL_CAPATH=str(path)) == f'CONSUL_CAPATH="{path}": {reason}'


def test_client_cert_and_key(pki: Pki) -> None:
    settings = load(CONSUL_CLIENT_CERT=str(pki.client_cert),
                    CONSUL_CLIENT_KEY=str(pki.client_key)).consul

    assert (settings.client_cert, settings.client_key) == (str(pki.client_cert),
                                                          str(pki.client_key))


@pytest.mark.parametrize(("given", "missing"), [("CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"),
                                                ("CONSUL_CLIENT_KEY", "CONSUL_CLIENT_CERT")])
def test_client_cert_and_key_come_in_pairs(pki: Pki, given: str, missing: str) -> None:
    message = error(**{given: str(pki.client_cert)})

    assert message == (f'{given}="{pki.client_cert}": both client cert and client key must be '
                       f"provided ({missing} is not set)")


def test_client_key_that_does_not_match_the_cert(pki: Pki) -> None:
    message = error(CONSUL_CLIENT_CERT=str(pki.client_cert),
                    CONSUL_CLIENT_KEY=str(pki.server_key))

    assert message.startswith(f'CONSUL_CLIENT_CERT="{pki.client_cert}": cannot load it with '
                              f'CONSUL_CLIENT_KEY="{pki.server_key}"')


def test_client_cert_that_does_not_exist(pki: Pki, tmp_path: Path) -> None:
    message = error(CONSUL_CLIENT_CERT=str(tmp_path / "absent.pem"),
                    CONSUL_CLIENT_KEY=str(pki.client_key))

    assert message.startswith("CONSUL_CLIENT_CERT=")
    assert "No such file or directory" in message


def test_encrypted_client_key_is_refused_not_prompted(pki: Pki, tmp_path: Path) -> None:
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki.client_key), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, capture_output=True)

    message = error(CONSUL_CLIENT_CERT=str(pki.client_cert), CONSUL_CLIENT_KEY=str(encrypted))

    assert "encrypted client keys are not supported" in message


@pytest.mark.parametrize(
    ("text", "name"),
    [("consul.test", "consul.test"), ("consul.test:8501", "consul.test"),
     ("[::1]:8501", "::1"), ("10.0.0.5:8501", "10.0.0.5")],
)
def test_tls_server_name_drops_the_port(text: str, name: str) -> None:
    assert load(CONSUL_TLS_SERVER_NAME=text).consul.tls_server_name == name


@pytest.mark.parametrize("text", ["::1", ":8501"])
def test_unusable_tls_server_name(text: str) -> None:
    assert error(CONSUL_TLS_SERVER_NAME=text).startswith(f'CONSUL_TLS_SERVER_NAME="{text}": ')


# --- election knobs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "key", "kv_path"),
    [
        ({"CONSUL_LEADER_SERVICE_NAME": "web"}, "/consul-leader/web/lock",
         "consul-leader/web/lock"),
        ({"CONSUL_LEADER_SERVICE_NAME": "web", "CONSUL_LEADER_KEY": "/service/web/leader"},
         "/service/web/leader", "service/web/leader"),
        ({"CONSUL_LEADER_KEY": "service/web/leader"}, "service/web/leader",
         "service/web/leader"),
        ({"CONSUL_LEADER_KEY": "///locks/a"}, "///locks/a", "locks/a"),
        ({"CONSUL_LEADER_KEY": "/locks/my app"}, "/locks/my app", "locks/my app"),
    ],
)
def test_key(env: dict[str, str], key: str, kv_path: str) -> None:
    config = load_config(env)

    assert (config.key, config.kv_path) == (key, kv_path)


def test_service_name_names_the_session() -> None:
    config = load(CONSUL_LEADER_SERVICE_NAME="billing")

    assert (config.service_name, config.session_name) == ("billing", "billing")


@pytest.mark.parametrize(
    ("key", "reason"),
    [("/", "the key is empty"), ("///", "the key is empty"),
     ("/a//b", "must not be empty"), ("/a/./b", "must not be empty"),
     ("a/../b", "must not be empty"), ("/a/b/", "must not be empty")],
)
def test_unusable_key(key: str, reason: str) -> None:
    message = error(CONSUL_LEADER_KEY=key)

    assert message.startswith(f'CONSUL_LEADER_KEY="{key}": ')
    assert reason in message


def test_service_name_that_makes_an_unusable_key_is_blamed() -> None:
    message = error(CONSUL_LEADER_SERVICE_NAME="..")

    assert message.startswith('CONSUL_LEADER_SERVICE_NAME="..": gives the lock key '
                              '"/consul-leader/../lock"')


def test_labels() -> None:
    config = load(CONSUL_LEADER_PRIMARY_LABEL="leader", CONSUL_LEADER_REPLICA_LABEL="follower")

    assert (config.primary_label, config.replica_label) == ("leader", "follower")


@pytest.mark.parametrize("text", ["", "  "])
def test_empty_primary_label(text: str) -> None:
    assert error(CONSUL_LEADER_PRIMARY_LABEL=text) == (
        f'CONSUL_LEADER_PRIMARY_LABEL="{text}": must not be empty')


def test_replica_label_must_differ_from_primary() -> None:
    assert error(CONSUL_LEADER_REPLICA_LABEL="primary") == (
        'CONSUL_LEADER_REPLICA_LABEL="primary": must differ from '
        'CONSUL_LEADER_PRIMARY_LABEL="primary"')


# --- timing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "ttl", "ttl_text", "renew"),
    [
        ({"CONSUL_LEADER_TTL": "1m"}, 60.0, "1m0s", 10.0),
        ({"CONSUL_LEADER_TTL": "90s"}, 90.0, "1m30s", 10.0),
        ({"CONSUL_LEADER_TTL": "24h"}, 86400.0, "24h0m0s", 10.0),
        ({"CONSUL_LEADER_TTL": "3s", "CONSUL_LEADER_SLEEP": "1"}, 3.0, "3s", 1.0),
        ({"CONSUL_LEADER_TTL": "1.5s", "CONSUL_LEADER_SLEEP": "500ms"}, 1.5, "1.5s", 0.5),
        ({"CONSUL_LEADER_SLEEP": "5"}, 15.0, "15s", 5.0),
        ({"CONSUL_LEADER_SLEEP": "2.5"}, 15.0, "15s", 2.5),
        ({"CONSUL_LEADER_SLEEP": ".5"}, 15.0, "15s", 0.5),
        ({"CONSUL_LEADER_SLEEP": "10s"}, 15.0, "15s", 10.0),
        ({"CONSUL_LEADER_TTL": "2m", "CONSUL_LEADER_SLEEP": "1m"}, 120.0, "2m0s", 60.0),
    ],
)
def test_ttl_and_sleep(env: dict[str, str], ttl: float, ttl_text: str, renew: float) -> None:
    config = load_config(env)

    assert (config.ttl, config.ttl_text, config.renew_interval) == (ttl, ttl_text, renew)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "not a duration (use Go syntax such as 15s or 1m30s)"),
        ("15", "not a duration: missing unit (use Go syntax such as 15s or 1m30s)"),
        ("15d", 'not a duration: unknown unit "d" (use Go syntax such as 15s or 1m30s)'),
        ("0s", "must be above 0s"),
        ("-15s", "must be above 0s"),
        ("25h", "must be at most 24h0m0s (Consul's maximum session TTL)"),
    ],
)
def test_ttl_errors(text: str, reason: str) -> None:
    assert error(CONSUL_LEADER_TTL=text) == f'CONSUL_LEADER_TTL="{text}": {reason}'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "not a number of seconds or a duration (such as 10 or 10s)"),
        ("nan", "not a number of seconds or a duration (such as 10 or 10s)"),
        ("1e1", "not a number of seconds or a duration (such as 10 or 10s)"),
        ("-1", "not a number of seconds or a duration (such as 10 or 10s)"),
        ("0", "must be above 0"),
        ("0s", "must be above 0"),
        ("-1s", "must be above 0"),
    ],
)
def test_sleep_errors(text: str, reason: str) -> None:
    assert error(CONSUL_LEADER_SLEEP=text) == f'CONSUL_LEADER_SLEEP="{text}": {reason}'


@pytest.mark.parametrize(("ttl", "sleep"), [("15s", "15"), ("15s", "20"), ("10s", "1m")])
def test_ttl_must_be_above_sleep(ttl: str, sleep: str) -> None:
    assert error(CONSUL_LEADER_TTL=ttl, CONSUL_LEADER_SLEEP=sleep) == (
        f'CONSUL_LEADER_TTL="{ttl}": TTL must be above SLEEP (CONSUL_LEADER_SLEEP="{sleep}")')


def test_sleep_above_default_ttl_names_both() -> None:
    message = error(CONSUL_LEADER_SLEEP="30")

    assert "CONSUL_LEADER_TTL=" in message and 'CONSUL_LEADER_SLEEP="30"' in message


def test_invalid_ttl_skips_the_comparison_with_sleep() -> None:
    assert errors(CONSUL_LEADER_TTL="abc", CONSUL_LEADER_SLEEP="20") == [
        'CONSUL_LEADER_TTL="abc": not a duration (use Go syntax such as 15s or 1m30s)']


@pytest.mark.parametrize(("text", "seconds", "normalized"),
                         [("15s", 15.0, "15s"), ("60s", 60.0, "1m0s"), ("1m", 60.0, "1m0s"),
                          ("250ms", 0.25, "250ms"), ("0", 0.0, "0s")])
def test_lock_delay(text: str, seconds: float, normalized: str) -> None:
    config = load(CONSUL_LEADER_LOCKDELAY=text)

    assert (config.lock_delay, config.lock_delay_text) == (seconds, normalized)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("61s", "must be at most 1m0s (Consul caps lock-delay at 60s)"),
     ("1m0.001s", "must be at most 1m0s (Consul caps lock-delay at 60s)"),
     ("-1s", "must be at least 0s"),
     ("15", "not a duration: missing unit (use Go syntax such as 15s or 1m30s)")],
)
def test_lock_delay_errors(text: str, reason: str) -> None:
    assert error(CONSUL_LEADER_LOCKDELAY=text) == f'CONSUL_LEADER_LOCKDELAY="{text}": {reason}'


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("1m", 60.0), ("500ms", 0.5)])
def test_hook_timeout(text: str, seconds: float) -> None:
    assert load(CONSUL_LEADER_HOOK_TIMEOUT=text).hook_timeout == seconds


@pytest.mark.parametrize(("text", "reason"),
                         [("0s", "must be above 0s"), ("10", "missing unit"),
                          ("soon", "not a duration")])
def test_hook_timeout_errors(text: str, reason: str) -> None:
    message = error(CONSUL_LEADER_HOOK_TIMEOUT=text)

    assert message.startswith(f'CONSUL_LEADER_HOOK_TIMEOUT="{text}": ')
    assert reason in message


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("30s", 30.0), ("10m", 600.0)])
def test_watch_wait(text: str, seconds: float) -> None:
    assert load(CONSUL_LEADER_WATCH_WAIT=text).watch_wait == seconds


@pytest.mark.parametrize(("text", "reason"),
                         [("500ms", "must be at least 1s"),
                          ("11m", "must be at most 10m0s (Consul's default max_query_time)"),
                          ("300", "missing unit")])
def test_watch_wait_errors(text: str, reason: str) -> None:
    message = error(CONSUL_LEADER_WATCH_WAIT=text)

    assert message.startswith(f'CONSUL_LEADER_WATCH_WAIT="{text}": ')
    assert reason in message


# --- logging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "level"),
    [("error", "error"), ("ERROR", "error"), ("warn", "warn"), ("Warning", "warn"),
     ("info", "info"), ("INFO", "info"), ("debug", "debug"), ("trace", "debug"),
     ("TRACE", "debug")],
)
def test_log_level(text: str, level: str) -> None:
    assert load(CONSUL_LEADER_LOG_LEVEL=text).log_level == level


def test_unknown_log_level() -> None:
    assert error(CONSUL_LEADER_LOG_LEVEL="verbose") == (
        'CONSUL_LEADER_LOG_LEVEL="verbose": must be one of error, warn, info, debug')


@pytest.mark.parametrize(("text", "fmt"), [("json", "json"), ("JSON", "json"),
                                           ("logfmt", "logfmt")])
def test_log_format(text: str, fmt: str) -> None:
    assert load(CONSUL_LEADER_LOG_FORMAT=text).log_format == fmt


def test_unknown_log_format() -> None:
    assert error(CONSUL_LEADER_LOG_FORMAT="text") == (
        'CONSUL_LEADER_LOG_FORMAT="text": must be one of logfmt, json')


# --- targets, Nomad, leader file, listener, hooks ------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [("web-1", ("web-1",)), ("web-1,web-2", ("web-1", "web-2")),
     (" web-1 , ,web-2,web-1, ", ("web-1", "web-2")), (",", ())],
)
def test_service_ids(text: str, ids: tuple[str, ...]) -> None:
    assert load(CONSUL_LEADER_SERVICE_IDS=text).service_ids == ids


def test_nomad_identity() -> None:
    config = load(NOMAD_ALLOC_ID="b4e61df9", NOMAD_ALLOC_DIR="/nonexistent",
                  CONSUL_LEADER_LEADER_FILE="")

    assert (config.alloc_id, config.alloc_dir) == ("b4e61df9", "/nonexistent")


def test_leader_file_defaults_to_the_allocation_directory(tmp_path: Path) -> None:
    config = load(NOMAD_ALLOC_ID="b4e61df9", NOMAD_ALLOC_DIR=str(tmp_path))

    assert config.leader_file == str(tmp_path / "b4e61df9")


@pytest.mark.parametrize("env", [{"NOMAD_ALLOC_ID": "b4e61df9"}, {"NOMAD_ALLOC_DIR": "/alloc"}])
def test_no_leader_file_outside_nomad(env: dict[str, str]) -> None:
    assert load_config(env).leader_file is None


def test_empty_leader_file_disables_it(tmp_path: Path) -> None:
    config = load(NOMAD_ALLOC_ID="b4e61df9", NOMAD_ALLOC_DIR=str(tmp_path),
                  CONSUL_LEADER_LEADER_FILE="")

    assert config.leader_file is None


def test_explicit_leader_file(tmp_path: Path) -> None:
    path = str(tmp_path / "leader")

    assert load(CONSUL_LEADER_LEADER_FILE=path).leader_file == path


def test_leader_file_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "leader"

    assert error(CONSUL_LEADER_LEADER_FILE=str(path)) == (
        f'CONSUL_LEADER_LEADER_FILE="{path}": its directory "{path.parent}" does not exist')


def test_leader_file_that_is_a_directory(tmp_path: Path) -> None:
    assert error(CONSUL_LEADER_LEADER_FILE=str(tmp_path)) == (
        f'CONSUL_LEADER_LEADER_FILE="{tmp_path}": is a directory')


def test_default_leader_file_in_a_missing_allocation_directory(tmp_path: Path) -> None:
    message = error(NOMAD_ALLOC_ID="b4e61df9", NOMAD_ALLOC_DIR=str(tmp_path / "absent"))

    assert message.startswith(f'CONSUL_LEADER_LEADER_FILE="{tmp_path}/absent/b4e61df9": ')
    assert message.endswith("(default from NOMAD_ALLOC_DIR and NOMAD_ALLOC_ID)")


@pytest.mark.parametrize(
    ("text", "listen"),
    [(":9600", ("", 9600)), ("0.0.0.0:9500", ("0.0.0.0", 9500)),
     ("127.0.0.1:9500", ("127.0.0.1", 9500)),
     ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::]:9500", ("::", 9500)),
     ("[::1]:9500", ("::1", 9500)), ("sidecar.local:80", ("sidecar.local", 80)),
     ("off", None), ("OFF", None)],
)
def test_listen(text: str, listen: tuple[str, int] | None) -> None:
    assert load(CONSUL_LEADER_LISTEN=text).listen == listen


@pytest.mark.parametrize("text", [":9600", "0.0.0.0:9500", "[::1]:9500", "[::]:0",
                                  "sidecar.local:80"])
def test_listen_text_gives_back_what_was_read(text: str) -> None:
    listen = load(CONSUL_LEADER_LISTEN=text).listen
    assert listen is not None
    assert listen_text(listen) == text


@pytest.mark.parametrize("text", ["9500", "host:", "host:99999", "::1:9500", "host:http",
                                  "host:\u0669"])
def test_listen_errors(text: str) -> None:
    assert error(CONSUL_LEADER_LISTEN=text) == (
        f'CONSUL_LEADER_LISTEN="{text}": expected host:port, :port, [ipv6]:port or off')


def test_hooks() -> None:
    config = load(CONSUL_LEADER_ON_PROMOTE="nginx -s reload",
                  CONSUL_LEADER_ON_DEMOTE="/local/demote.sh 'primary'")

    assert (config.on_promote, config.on_demote) == ("nginx -s reload",
                                                     "/local/demote.sh 'primary'")


def test_health_check_can_be_turned_off() -> None:
    assert load(CONSUL_LEADER_HEALTH_CHECK="false").health_check is False


def test_node_name() -> None:
    assert load(CONSUL_LEADER_NODE="worker-3").node_name == "worker-3"


def test_publishing_defaults_to_a_registration_of_our_own() -> None:
    config = load()
    assert (config.publish, config.published_name) == ("registration", None)
    assert load(CONSUL_LEADER_PUBLISHED_NAME="db").published_name == "db"
    assert load(CONSUL_LEADER_PUBLISH="labels").publish == "labels"


def test_publishing_mode_must_be_known() -> None:
    assert error(CONSUL_LEADER_PUBLISH="tags").startswith('CONSUL_LEADER_PUBLISH="tags": '
                                                         "must be one of registration, labels")


def test_a_published_name_needs_the_registration_mode() -> None:
    line = error(CONSUL_LEADER_PUBLISH="labels", CONSUL_LEADER_PUBLISHED_NAME="db")
    assert line.startswith('CONSUL_LEADER_PUBLISHED_NAME="db": only with '
                           "CONSUL_LEADER_PUBLISH=registration")


# --- the whole ------------------------------------------------------------------------------


def test_all_errors_are_collected_each_naming_its_variable(tmp_path: Path) -> None:
    found = errors(CONSUL_HTTP_ADDR="gopher://x", CONSUL_HTTP_SSL_VERIFY="maybe",
                   CONSUL_CACERT=str(tmp_path / "absent.pem"), CONSUL_LEADER_TTL="abc",
                   CONSUL_LEADER_LOCKDELAY="2m", CONSUL_LEADER_LOG_LEVEL="loud",
                   CONSUL_LEADER_LISTEN="nowhere", CONSUL_LEADER_KEY="/")

    named = sorted(message.split("=", 1)[0] for message in found)
    assert named == sorted(["CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_CACERT",
                            "CONSUL_LEADER_TTL", "CONSUL_LEADER_LOCKDELAY",
                            "CONSUL_LEADER_LOG_LEVEL", "CONSUL_LEADER_LISTEN",
                            "CONSUL_LEADER_KEY"])
    assert all("\n" not in message for message in found)


def test_config_error_text_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load(CONSUL_LEADER_TTL="a\nb", CONSUL_LEADER_LOG_FORMAT="x")

    assert "\n" not in str(info.value)
    assert str(info.value) == "; ".join(info.value.errors)


class _RecordingEnviron(dict[str, str]):
    """An environment that remembers every name looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_variables_table_lists_exactly_what_is_read() -> None:
    environ = _RecordingEnviron({})
    load_config(environ)

    documented = [variable.name for variable in VARIABLES]
    assert len(documented) == len(set(documented))
    assert environ.asked == set(documented)
    assert all(variable.default_text and variable.meaning for variable in VARIABLES)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_config touched the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def test_loading_never_touches_the_network(no_network: None, pki: Pki) -> None:
    config = load(CONSUL_HTTP_ADDR="https://consul.service.consul:8501/gw",
                  CONSUL_CACERT=str(pki.ca), CONSUL_CLIENT_CERT=str(pki.client_cert),
                  CONSUL_CLIENT_KEY=str(pki.client_key), CONSUL_TLS_SERVER_NAME="consul.test",
                  CONSUL_LEADER_LISTEN="sidecar.local:9500")

    assert config.consul.base_url == "https://consul.service.consul:8501/gw"


# --- the health gate (issue 12) ---------------------------------------------------------------


def test_the_health_gate_is_off_unless_asked_for() -> None:
    assert load().health_gate is False
    assert load(CONSUL_LEADER_HEALTH_GATE="true").health_gate is True


@pytest.mark.parametrize(("env", "needs"), [
    ({"CONSUL_LEADER_PUBLISH": "labels"}, "only with CONSUL_LEADER_PUBLISH=registration"),
    ({"CONSUL_LEADER_HEALTH_CHECK": "false"}, "needs CONSUL_LEADER_HEALTH_CHECK=true"),
])
def test_the_health_gate_needs_the_alias_checks_it_binds_to(env: dict[str, str],
                                                            needs: str) -> None:
    line = error(CONSUL_LEADER_HEALTH_GATE="true", **env)
    assert line.startswith('CONSUL_LEADER_HEALTH_GATE="true": ') and needs in line


def test_the_health_gate_must_be_a_boolean() -> None:
    assert error(CONSUL_LEADER_HEALTH_GATE="on").startswith(
        'CONSUL_LEADER_HEALTH_GATE="on": not a boolean')
