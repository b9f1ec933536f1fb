"""Conformance of the HTTP layer every endpoint shares (consul-semantics.md §0).

Tests marked `real_consul` also pass against a real agent (see conftest.py).
"""

from __future__ import annotations

import gzip
import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.conformance.conftest import ConsulTarget

real_consul = pytest.mark.real_consul

TEXT_PLAIN = "text/plain; charset=utf-8"
INVALID_URL_PATH = "Invalid URL path: not a recognized HTTP API endpoint"


@dataclass
class RawReply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def raw_request(consul: ConsulTarget, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> RawReply:
    """One request with exactly these headers (requests would add Accept-Encoding)."""
    parts = urlsplit(consul.addr)
    assert parts.scheme == "http", "these tests speak plain HTTP"
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return RawReply(response.status, response.headers, response.read())
    finally:
        connection.close()


# -- content types ----------------------------------------------------------------


@real_consul
def test_success_is_json_without_charset(consul: ConsulTarget) -> None:
    """§0: a handler's value is JSON with `Content-Type: application/json`, no charset."""
    response = consul.put(f"/v1/kv/{consul.key('ct')}", data=b"v")
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() is True


@real_consul
def test_error_body_is_plain_text_with_sniffed_content_type(consul: ConsulTarget) -> None:
    """§0 handleErr: status, then the error text raw; Go sniffs `text/plain; charset=utf-8`."""
    response = consul.put("/v1/session/renew/0b2f5a4e-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == TEXT_PLAIN
    assert response.text == "Session id '0b2f5a4e-0000-4000-8000-000000000000' not found"


@real_consul
def test_empty_success_has_no_body_and_no_content_type(consul: ConsulTarget) -> None:
    """§0/§4.3: a handler returning nil writes nothing: 200, empty body, no Content-Type."""
    check_id = f"http-empty-{consul.prefix.split('/')[1]}"
    reply = raw_request(
        consul, "PUT", "/v1/agent/check/register",
        body=json.dumps({"ID": check_id, "Name": check_id, "TTL": "10m"}).encode(),
    )
    consul.put(f"/v1/agent/check/deregister/{check_id}")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers.get("Content-Type") is None


@real_consul
def test_json_escapes_html_characters_like_go(consul: ConsulTarget) -> None:
    """§0: Go's encoder writes `<`, `>`, `&` as \\u003c, \\u003e, \\u0026."""
    service_id = f"http-esc-{consul.prefix.split('/')[1]}"
    consul.register_service({"ID": service_id, "Name": service_id, "Tags": ["a<b>&c"]})
    reply = raw_request(consul, "GET", f"/v1/agent/service/{service_id}")
    assert b'"a\\u003cb\\u003e\\u0026c"' in reply.body
    assert json.loads(reply.body)["Tags"] == ["a<b>&c"]


# -- methods and paths --------------------------------------------------------


@real_consul
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/session/create", {"PUT"}),
        ("DELETE", "/v1/agent/service/register", {"PUT"}),
        ("PUT", "/v1/agent/services", {"GET"}),
        ("POST", "/v1/kv/x", {"GET", "PUT", "DELETE"}),
    ],
)
def test_wrong_method_is_a_405_with_allow(
    consul: ConsulTarget, method: str, path: str, allowed: set[str]
) -> None:
    """§0: a method the endpoint does not list → 405 `method X not allowed` + `Allow`."""
    reply = raw_request(consul, method, path)
    assert reply.status == 405
    assert reply.body == f"method {method} not allowed".encode()
    assert set(reply.headers["Allow"].split(",")) - {"OPTIONS"} == allowed


@real_consul
def test_options_is_a_200_listing_options_and_the_methods(consul: ConsulTarget) -> None:
    """§0: OPTIONS → 200 with `Allow: OPTIONS,<methods>`."""
    reply = raw_request(consul, "OPTIONS", "/v1/kv/x")
    assert reply.status == 200
    assert reply.headers["Allow"].split(",") == ["OPTIONS", "GET", "PUT", "DELETE"]


@real_consul
def test_unknown_api_path_is_a_404_with_consul_text(consul: ConsulTarget) -> None:
    """§0: an unregistered `/v1/...` path → 404 `Invalid URL path: ...`."""
    response = consul.get("/v1/no/such/endpoint")
    assert response.status_code == 404
    assert response.text == INVALID_URL_PATH


@real_consul
def test_unclean_path_redirects_to_the_cleaned_one_keeping_the_query(
    consul: ConsulTarget,
) -> None:
    """§0: Go's ServeMux answers `//` with a redirect (301, or 307 from Go 1.26), query kept."""
    response = consul.get("/v1//agent/self?pretty&dc=dc1", allow_redirects=False)
    assert response.status_code in ((301,) if consul.double is not None else (301, 307))
    assert response.headers["Location"] == "/v1/agent/self?pretty&dc=dc1"


# -- encodings ---------------------------------------------------------------------


@real_consul
def test_gzip_when_the_client_accepts_it(consul: ConsulTarget) -> None:
    """§0: every endpoint is wrapped in a gzip handler (MinSize 0)."""
    consul.put(f"/v1/kv/{consul.key('gz')}", data=b"zipped")
    path = f"/v1/kv/{consul.key('gz')}"
    zipped = raw_request(consul, "GET", path, headers={"Accept-Encoding": "gzip"})
    plain = raw_request(consul, "GET", path)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped.body)) == json.loads(plain.body)
    assert plain.headers.get("Content-Encoding") is None


@real_consul
def test_pretty_indents_four_spaces_and_ends_with_a_newline(consul: ConsulTarget) -> None:
    """§0: `?pretty` → json.MarshalIndent(obj, "", "    ") plus "\\n"; default is compact."""
    key = consul.key("pretty")
    consul.put(f"/v1/kv/{key}", data=b"p")
    pretty = consul.get(f"/v1/kv/{key}?pretty")
    compact = consul.get(f"/v1/kv/{key}")
    assert pretty.text == json.dumps(compact.json(), indent=4) + "\n"
    assert compact.text == json.dumps(compact.json(), separators=(",", ":"))


# -- headers ---------------------------------------------------------------------


@real_consul
def test_default_acl_policy_header_on_every_answer(consul: ConsulTarget) -> None:
    """§0: X-Consul-Default-ACL-Policy on reads, writes and errors, even with ACLs off."""
    answers = [
        consul.get(f"/v1/kv/{consul.key('missing')}"),
        consul.put(f"/v1/kv/{consul.key('written')}", data=b"w"),
        consul.get("/v1/kv/"),
    ]
    assert [answer.status_code for answer in answers] == [404, 200, 400]
    for answer in answers:
        assert answer.headers["X-Consul-Default-ACL-Policy"] in ("allow", "deny")
        if consul.double is not None:
            assert answer.headers["X-Consul-Default-ACL-Policy"] == "allow"


@real_consul
def test_writes_send_no_index_header_and_reads_do(consul: ConsulTarget) -> None:
    """§0: KV PUT/DELETE and session create/renew/destroy send no X-Consul-Index."""
    key = consul.key("idx")
    session_id = consul.create_session(TTL="30s")
    writes = [
        consul.put(f"/v1/kv/{key}", data=b"1"),
        consul.delete(f"/v1/kv/{key}"),
        consul.put("/v1/session/create", json={"TTL": "30s"}),
        consul.put(f"/v1/session/renew/{session_id}"),
        consul.put(f"/v1/session/destroy/{session_id}"),
    ]
    consul.put(f"/v1/session/destroy/{writes[2].json()['ID']}")
    for write in writes:
        assert write.status_code == 200, write.text
        assert "X-Consul-Index" not in write.headers
    read = consul.get(f"/v1/session/info/{session_id}")
    assert int(read.headers["X-Consul-Index"]) >= 1


@real_consul
def test_session_create_ignores_unknown_fields(consul: ConsulTarget) -> None:
    """§0 [inferred]: Session.UnmarshalJSON is plain json.Unmarshal, so no strict decoding."""
    session_id = consul.create_session(TTL="30s", NoSuchField=1)
    assert consul.session_info(session_id)[0]["TTL"] == "30s"
