"""HTTP on the wire as a Consul agent speaks it (consul-semantics.md §0).

* JSON is Go's: compact, `<`, `>`, `&` escaped as \\u003c..., no trailing newline;
  `?pretty` gives 4-space indentation and a trailing newline.
* Errors are plain text with Go's sniffed content type.
* Bodies are gzipped whenever the client accepts gzip and the body is not empty
  (Consul wraps every endpoint in a gzip handler with MinSize 0).
* An unclean path (`//`, `/./`, `/../`) is redirected to the cleaned one, query kept.
"""

from __future__ import annotations

import gzip
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
_GO_HTML_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


class HttpError(Exception):
    """Answer `status` with the plain-text `message` (Consul's HTTPError)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    raw_path: str
    path: str  # percent-decoded, as Go's URL.Path
    query: dict[str, list[str]]
    raw_query: str
    headers: Mapping[str, str]
    body: bytes

    def param(self, name: str) -> str | None:
        """Go's `params.Get(name)` when the parameter is present, else None."""
        values = self.query.get(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return name in self.query

    @property
    def pretty(self) -> bool:
        return "pretty" in self.query


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # False for answers that never pass through Consul's wrapper (redirects, index 404).
    consul_headers: bool = True


def go_json(value: Any, pretty: bool = False) -> bytes:
    """Marshal like Go's encoding/json (with Consul's `?pretty` indentation)."""
    if pretty:
        text = json.dumps(value, indent=4, ensure_ascii=False) + "\n"
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for character, escaped in _GO_HTML_ESCAPES:
        if character in text:
            text = text.replace(character, escaped)
    return text.encode("utf-8")


def json_reply(value: Any, request: Request, headers: dict[str, str] | None = None) -> Reply:
    return Reply(200, go_json(value, request.pretty), JSON_CONTENT_TYPE, dict(headers or {}))


def text_reply(status: int, message: str) -> Reply:
    return Reply(status, message.encode("utf-8"), TEXT_CONTENT_TYPE if message else None)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when `Accept-Encoding` lists gzip (or *) with a non-zero q-value."""
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = params.strip()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def gzip_body(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=6, mtime=0)


def clean_path(path: str) -> str:
    """Go's ServeMux cleanPath: path.Clean, keeping a trailing slash (§0 path cleaning)."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    cleaned = "/" + "/".join(parts)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def redirect(location: str, status: int, method: str) -> Reply:
    """Go's http.Redirect: a short HTML body for GET only."""
    body = b""
    content_type = None
    if method in ("GET", "HEAD"):
        content_type = "text/html; charset=utf-8"
    if method == "GET":
        reason = {301: "Moved Permanently", 307: "Temporary Redirect"}.get(status, "")
        body = f'<a href="{html.escape(location)}">{reason}</a>.\n\n'.encode()
    return Reply(status, body, content_type, {"Location": location}, consul_headers=False)
