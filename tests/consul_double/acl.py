"""ACLs for the Consul stand-in: find the token, parse its rules, decide, word the refusal.

What this module guarantees (checked against hashicorp/consul, see consul-semantics.md §6):

* Token sources follow `agent/http.go` `parseTokenInternal`: a non-empty `?token=` wins, then a
  non-empty `X-Consul-Token` header, then `Authorization: Bearer <token>` (scheme matched
  case-insensitively, only the first space-separated word of the value is used).
* Decisions follow `acl/policy_authorizer.go`: an exact rule (`key "a"`) beats every prefix
  rule; otherwise the longest matching prefix rule (`key_prefix "a/"`) decides; with no
  matching rule the default policy (`allow` or `deny`) decides. A rule's level grants:
  `write` -> read, list, write; `list` (keys only) -> read, list; `read` -> read;
  `deny` -> nothing. When one token names the same target twice, the stronger level wins,
  in Consul's order deny > write > list > read (`takesPrecedenceOver`).
* Refusals carry Consul's wording (`acl/errors.go`), which the stand-in sends as the 403 body:
  `Permission denied: token with AccessorID '<id>' lacks permission 'key:write' on "<name>"`,
  the anonymous variant with its trailing explanation, and `ACL not found` for an unknown
  secret. Every token keeps one random AccessorID for its lifetime.
* Management tokens allow everything. The anonymous token (no token, or the secret
  `anonymous`) has no rules of its own, so only the default policy applies to it.
* Rules are accepted in Consul's HCL form and in its JSON form; both compile to the same
  `Policy`. Anything this module does not understand is a `ValueError` that names the line.

Deliberate limits (a test double, not Consul):

* One rules text per token: no policies-by-name, roles, service or node identities,
  namespaces or partitions.
* Rule kinds: key, session, service, node, agent (each with its `_prefix` form) and
  `operator`. Unknown kinds and unknown attributes are rejected where Consul would ignore
  them, so a typo in a test fixture fails loudly instead of silently granting nothing.
* `KeyWritePrefix` (recursive delete: write on a prefix and on every rule under it) is not
  modelled; callers check `key:write` on the prefix itself.
* An `Authorizer` is a snapshot taken at `resolve`: revoking a token affects later requests,
  not a decision already in progress (Consul caches authorizers in the same way).
"""

from __future__ import annotations

import email.message
import json
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "ACL_NOT_FOUND",
    "ANONYMOUS_ACCESSOR_ID",
    "ANONYMOUS_SECRET",
    "AclDenied",
    "AclSystem",
    "Authorizer",
    "Policy",
    "parse_rules",
    "token_from_request",
]

ACL_NOT_FOUND = "ACL not found"
# Consul's built-in anonymous token: fixed AccessorID, and the literal secret "anonymous".
ANONYMOUS_ACCESSOR_ID = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_SECRET = "anonymous"

RESOURCES = frozenset({"key", "session", "service", "node", "agent", "operator"})
ACCESS_LEVELS = frozenset({"read", "list", "write"})

# What a rule of each level lets through (policy_authorizer.go `enforce`).
_GRANTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "read": frozenset({"read"}),
        "list": frozenset({"read", "list"}),
        "write": frozenset({"read", "list", "write"}),
        "deny": frozenset(),
    }
)
# Higher wins when one token names the same target twice (policy.go `takesPrecedenceOver`).
_PRECEDENCE: Mapping[str, int] = MappingProxyType({"read": 1, "list": 2, "write": 3, "deny": 4})

# Block rule kind -> (resource, is a prefix rule).
_BLOCK_KINDS: Mapping[str, tuple[str, bool]] = MappingProxyType(
    {
        "key": ("key", False),
        "key_prefix": ("key", True),
        "session": ("session", False),
        "session_prefix": ("session", True),
        "service": ("service", False),
        "service_prefix": ("service", True),
        "node": ("node", False),
        "node_prefix": ("node", True),
        "agent": ("agent", False),
        "agent_prefix": ("agent", True),
    }
)
# Setting rule kind (`operator = "read"`) -> resource. These resources have no names.
_SETTING_KINDS: Mapping[str, str] = MappingProxyType({"operator": "operator"})
_UNNAMED_RESOURCES = frozenset(_SETTING_KINDS.values())
# Only keys know the `list` level; Consul rejects it everywhere else.
_RESOURCES_WITH_LIST = frozenset({"key"})
# `intentions` is valid on service rules; it governs Connect, which the stand-in lacks.
_EXTRA_ATTRIBUTES: Mapping[str, frozenset[str]] = MappingProxyType(
    {"service": frozenset({"intentions"})}
)

_ANONYMOUS_EXPLANATION = (
    ". The anonymous token is used implicitly when a request does not specify a token."
)


class AclDenied(Exception):
    """A request the ACLs refuse; `message` is the complete 403 body Consul would send."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- token sources


def token_from_request(
    query: Mapping[str, list[str]], headers: Mapping[str, str] | email.message.Message
) -> str | None:
    """The secret a request carries, by Consul's precedence; None when it carries none.

    `query` is shaped like `urllib.parse.parse_qs` output. `headers` may be a plain dict
    (matched case-insensitively here) or the `http.server` request's `self.headers`.
    """
    from_query = query.get("token") or [""]
    token = (
        from_query[0]
        or _header(headers, "X-Consul-Token")
        or _bearer_credentials(_header(headers, "Authorization"))
    )
    return token or None


def _header(headers: Mapping[str, str] | email.message.Message, name: str) -> str:
    """First value of a header, matched case-insensitively; '' when absent."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    # Go's textproto trims the spaces and tabs around a header value.
    return "" if value is None else value.strip(" \t")


def _bearer_credentials(authorization: str) -> str:
    """The token of `Bearer <token>`, split exactly as Consul splits it; '' otherwise."""
    parts = authorization.split(" ")
    if len(parts) < 2 or parts[0].lower() != "bearer":
        return ""
    credentials = " ".join(parts[1:]).strip()
    # RFC 6750 tokens hold no spaces, so Consul keeps only the first word.
    return credentials.split(" ")[0].strip()


# --------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True)
class Policy:
    """The compiled rules of one token. Equal rules give equal policies, whatever the form.

    `exact` maps (resource, name) to a level. `prefixes` maps a resource to its prefix rules,
    longest prefix first. `operator` is the level of the `operator` setting, if any.
    """

    exact: Mapping[tuple[str, str], str]
    prefixes: Mapping[str, tuple[tuple[str, str], ...]]
    operator: str | None

    def decision(self, resource: str, name: str, access: str) -> bool | None:
        """True or False when a rule matches; None when the default policy must decide."""
        level = self.matching_level(resource, name)
        return None if level is None else access in _GRANTS[level]

    def matching_level(self, resource: str, name: str) -> str | None:
        """The level of the rule that governs `name`: exact first, then longest prefix."""
        if resource == "operator":
            return self.operator
        exact = self.exact.get((resource, name))
        if exact is not None:
            return exact
        return next(
            (level for prefix, level in self.prefixes.get(resource, ()) if name.startswith(prefix)),
            None,
        )


EMPTY_POLICY = Policy(exact=MappingProxyType({}), prefixes=MappingProxyType({}), operator=None)


@dataclass(frozen=True)
class _Block:
    """`key_prefix "consul-leader/" { policy = "write" }`, from either syntax."""

    kind: str
    label: str
    attributes: Mapping[str, str]
    where: str


@dataclass(frozen=True)
class _Setting:
    """`operator = "read"`, from either syntax."""

    kind: str
    value: str
    where: str


_Statement = _Block | _Setting


def parse_rules(text: str) -> Policy:
    """Compile rules in Consul's HCL or JSON form; ValueError names what is wrong and where."""
    # Like Consul's HCL decoder: a document whose first non-blank character is '{' is JSON.
    statements = _json_statements(text) if text.lstrip().startswith("{") else _hcl_statements(text)
    builder = _PolicyBuilder()
    for statement in statements:
        builder.add(statement)
    return builder.build()


class _PolicyBuilder:
    """Validates statements and merges repeated targets by Consul's precedence."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], str] = {}
        self._prefix: dict[tuple[str, str], str] = {}
        self._operator: str | None = None

    def add(self, statement: _Statement) -> None:
        if isinstance(statement, _Block):
            self._add_block(statement)
        else:
            self._add_setting(statement)

    def build(self) -> Policy:
        by_resource: dict[str, list[tuple[str, str]]] = {}
        for (resource, prefix), level in self._prefix.items():
            by_resource.setdefault(resource, []).append((prefix, level))
        prefixes = {
            resource: tuple(sorted(rules, key=lambda rule: (-len(rule[0]), rule[0])))
            for resource, rules in by_resource.items()
        }
        return Policy(
            exact=MappingProxyType(dict(self._exact)),
            prefixes=MappingProxyType(prefixes),
            operator=self._operator,
        )

    def _add_block(self, block: _Block) -> None:
        if block.kind in _SETTING_KINDS:
            raise ValueError(
                f"Invalid ACL rules ({block.where}): {block.kind} takes a value, "
                f'not a block: write {block.kind} = "read"'
            )
        resource, is_prefix = _rule_kind(block.kind, block.where)
        self._check_attributes(block, resource)
        level = _checked_level(block.attributes.get("policy", ""), block, resource)
        target = (resource, block.label)
        rules = self._prefix if is_prefix else self._exact
        rules[target] = _stronger(rules.get(target), level)

    def _add_setting(self, setting: _Setting) -> None:
        if setting.kind in _BLOCK_KINDS:
            raise ValueError(
                f"Invalid ACL rules ({setting.where}): {setting.kind} needs a quoted name "
                f'and a block, e.g. {setting.kind} "name" {{ policy = "read" }}'
            )
        resource = _SETTING_KINDS.get(setting.kind)
        if resource is None:
            raise ValueError(_unsupported_kind(setting.kind, setting.where))
        level = _checked_level(setting.value, setting, resource)
        self._operator = _stronger(self._operator, level)

    @staticmethod
    def _check_attributes(block: _Block, resource: str) -> None:
        allowed = {"policy"} | _EXTRA_ATTRIBUTES.get(resource, frozenset())
        unknown = sorted(set(block.attributes) - allowed)
        if unknown:
            raise ValueError(
                f'Invalid {block.kind} rule for "{block.label}" ({block.where}): unknown '
                f"attribute {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
            )
        intentions = block.attributes.get("intentions")
        if intentions is not None and intentions not in ("read", "write", "deny"):
            raise ValueError(
                f'Invalid {block.kind} intentions policy {intentions!r} for "{block.label}" '
                f"({block.where}): must be one of read, write, deny"
            )


def _rule_kind(kind: str, where: str) -> tuple[str, bool]:
    found = _BLOCK_KINDS.get(kind)
    if found is None:
        raise ValueError(_unsupported_kind(kind, where))
    return found


def _unsupported_kind(kind: str, where: str) -> str:
    supported = ", ".join([*_BLOCK_KINDS, *_SETTING_KINDS])
    return f"Invalid ACL rules ({where}): unsupported rule kind {kind!r}; supported: {supported}"


def _checked_level(level: str, statement: _Statement, resource: str) -> str:
    valid = ["read", "write", "deny"]
    if resource in _RESOURCES_WITH_LIST:
        valid.append("list")
    if level in valid:
        return level
    target = f' for "{statement.label}"' if isinstance(statement, _Block) else ""
    shown = repr(level) if level else "missing"
    raise ValueError(
        f"Invalid {statement.kind} policy{target} ({statement.where}): {shown}; "
        f"must be one of {', '.join(valid)}"
    )


def _stronger(current: str | None, new: str) -> str:
    if current is None or _PRECEDENCE[new] > _PRECEDENCE[current]:
        return new
    return current


# --------------------------------------------------------------------------- HCL subset


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "string", "error" (text is the message) or a punctuation character
    text: str
    line: int
    column: int

    def describe(self) -> str:
        return self.text if self.kind == "ident" else repr(self.text)


_HCL_LEXEME = re.compile(
    r"""
      (?P<space>[ \t\r\n]+)
    | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
    | (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.-]*)
    | (?P<punct>[{}=,])
    """,
    re.VERBOSE | re.DOTALL,
)


def _hcl_statements(text: str) -> list[_Statement]:
    return _HclParser(list(_hcl_tokens(text))).statements()


def _hcl_tokens(text: str) -> Iterator[_Token]:
    position, line, line_start = 0, 1, 0
    while position < len(text):
        match = _HCL_LEXEME.match(text, position)
        column = position - line_start + 1
        if match is None:
            # Report it only when the parser gets here, so earlier grammar errors come first.
            yield _Token("error", _lexing_error(text, position, line, column), line, column)
            return
        kind = match.lastgroup or ""
        lexeme = match.group()
        if kind == "string":
            yield _Token("string", _decode_string(lexeme, line, column), line, column)
        elif kind in ("ident", "punct"):
            yield _Token("ident" if kind == "ident" else lexeme, lexeme, line, column)
        newlines = lexeme.count("\n")
        if newlines:
            line += newlines
            line_start = position + lexeme.rindex("\n") + 1
        position = match.end()


def _lexing_error(text: str, position: int, line: int, column: int) -> str:
    where = f"Failed to parse ACL rules: line {line}, column {column}"
    if text.startswith('"', position):
        return f"{where}: unterminated string"
    if text.startswith("/*", position):
        return f"{where}: unterminated /* comment"
    return f"{where}: unexpected character {text[position]!r}"


def _decode_string(lexeme: str, line: int, column: int) -> str:
    try:
        # HCL string escapes (\" \\ \n \t \uXXXX) are a subset of JSON's.
        decoded: str = json.loads(lexeme, strict=False)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Failed to parse ACL rules: line {line}, column {column}: bad string {lexeme}: "
            f"{exc.msg}"
        ) from None
    return decoded


class _HclParser:
    """Recursive descent over: (IDENT STRING '{' (KEY '=' STRING ','?)* '}' | IDENT '=' STRING)*."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._position = 0

    def statements(self) -> list[_Statement]:
        statements: list[_Statement] = []
        while self._peek() is not None:
            statements.append(self._statement())
        return statements

    def _statement(self) -> _Statement:
        kind = self._expect("ident", "a rule kind such as key_prefix")
        if self._next_is("="):
            self._advance()
            value = self._expect("string", f"a quoted level after {kind.text} =")
            return _Setting(kind.text, value.text, _line(kind))
        label = self._expect("string", f"a quoted name after {kind.text}")
        self._expect("{", f'{{ after {kind.text} "{label.text}"')
        attributes = self._attributes(kind.text, label.text)
        return _Block(kind.text, label.text, MappingProxyType(attributes), _line(kind))

    def _attributes(self, kind: str, label: str) -> dict[str, str]:
        attributes: dict[str, str] = {}
        while not self._next_is("}"):
            name = self._expect_attribute_name(kind, label)
            self._expect("=", f"= after {name.text}")
            value = self._expect("string", f"a quoted value for {name.text}")
            if name.text in attributes:
                raise self._error(name, f'{name.text} set twice in {kind} "{label}"')
            attributes[name.text] = value.text
            if self._next_is(","):
                self._advance()
        self._advance()
        return attributes

    def _expect_attribute_name(self, kind: str, label: str) -> _Token:
        token = self._peek()
        if token is not None and token.kind in ("ident", "string"):
            return self._advance()
        return self._expect("ident", f'an attribute or }} to close {kind} "{label}"')

    def _expect(self, kind: str, wanted: str) -> _Token:
        token = self._peek()
        if token is None:
            last = self._tokens[-1] if self._tokens else _Token("", "", 1, 1)
            raise self._error(last, f"rules end early; expected {wanted}")
        if token.kind != kind:
            raise self._error(token, f"expected {wanted}, found {token.describe()}")
        return self._advance()

    def _next_is(self, kind: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == kind

    def _peek(self) -> _Token | None:
        if self._position >= len(self._tokens):
            return None
        token = self._tokens[self._position]
        if token.kind == "error":
            raise ValueError(token.text)
        return token

    def _advance(self) -> _Token:
        token = self._tokens[self._position]
        self._position += 1
        return token

    @staticmethod
    def _error(token: _Token, message: str) -> ValueError:
        return ValueError(
            f"Failed to parse ACL rules: line {token.line}, column {token.column}: {message}"
        )


def _line(token: _Token) -> str:
    return f"line {token.line}"


# --------------------------------------------------------------------------- JSON form


class _JsonObject(list[tuple[str, Any]]):
    """A JSON object kept as its (key, value) pairs, so repeated keys are not lost."""


def _json_statements(text: str) -> list[_Statement]:
    try:
        document = json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Failed to parse ACL rules: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(document, _JsonObject):
        raise ValueError("Failed to parse ACL rules: JSON rules must be an object")
    statements: list[_Statement] = []
    for kind, value in document:
        if isinstance(value, str):
            statements.append(_Setting(kind, value, f'JSON "{kind}"'))
        elif isinstance(value, list):
            statements.extend(_json_blocks(kind, value))
        else:
            raise ValueError(
                f'Failed to parse ACL rules: JSON "{kind}" must be a quoted level or an object '
                f'of named rules, e.g. {{"<name>": {{"policy": "read"}}}}'
            )
    return statements


def _json_blocks(kind: str, value: Any) -> Iterator[_Block]:
    # HCL's JSON form writes repeated blocks either as one object or as a list of objects.
    groups = value if isinstance(value, list) and not isinstance(value, _JsonObject) else [value]
    for group in groups:
        if not isinstance(group, _JsonObject):
            raise ValueError(
                f'Failed to parse ACL rules: JSON "{kind}" must map names to '
                f'{{"policy": "..."}} objects'
            )
        for label, body in group:
            yield _Block(kind, label, _json_attributes(kind, label, body), f'JSON "{kind}"')


def _json_attributes(kind: str, label: str, body: Any) -> Mapping[str, str]:
    if not isinstance(body, _JsonObject) or not all(isinstance(v, str) for _, v in body):
        raise ValueError(
            f'Failed to parse ACL rules: JSON {kind} "{label}" must be an object of strings, '
            f'e.g. {{"policy": "read"}}'
        )
    names = [name for name, _ in body]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(
            f'Failed to parse ACL rules: JSON {kind} "{label}" sets {repeated[0]} twice'
        )
    return MappingProxyType(dict(body))


# --------------------------------------------------------------------------- authorization


class Authorizer:
    """Decisions for one resolved token. Built by `AclSystem.resolve`, never directly."""

    def __init__(
        self,
        *,
        accessor_id: str,
        policy: Policy,
        default_allow: bool,
        management: bool = False,
    ) -> None:
        self.accessor_id = accessor_id
        self.is_management = management
        self._policy = policy
        self._default_allow = default_allow

    @property
    def is_anonymous(self) -> bool:
        return self.accessor_id == ANONYMOUS_ACCESSOR_ID

    def allows(self, resource: str, name: str, access: str) -> bool:
        """Whether `access` (read, list, write) on `resource` `name` is permitted."""
        _check_request(resource, access)
        if self.is_management:
            return True
        decision = self._policy.decision(resource, name, access)
        return self._default_allow if decision is None else decision

    def require(self, resource: str, name: str, access: str) -> None:
        """Return quietly when allowed; else raise AclDenied worded as Consul words it."""
        if not self.allows(resource, name, access):
            raise AclDenied(self._denial(resource, name, access))

    def _denial(self, resource: str, name: str, access: str) -> str:
        who = (
            "anonymous token"
            if self.is_anonymous
            else f"token with AccessorID '{self.accessor_id}'"
        )
        message = f"Permission denied: {who} lacks permission '{resource}:{access}'"
        if name and resource not in _UNNAMED_RESOURCES:
            # Consul quotes the name without escaping it (ResourceDescriptor.ToString).
            message += f' on "{name}"'
        if self.is_anonymous:
            message += _ANONYMOUS_EXPLANATION
        return message


def _check_request(resource: str, access: str) -> None:
    # A bad resource or access is a bug in the stand-in; say so rather than deny.
    if resource not in RESOURCES:
        raise ValueError(f"unknown ACL resource {resource!r}; known: {sorted(RESOURCES)}")
    if access not in ACCESS_LEVELS:
        raise ValueError(f"unknown ACL access {access!r}; known: {sorted(ACCESS_LEVELS)}")


@dataclass(frozen=True)
class _StoredToken:
    accessor_id: str
    policy: Policy
    management: bool


class AclSystem:
    """The stand-in's token store: secrets -> rules, plus the default policy. Thread-safe."""

    enabled: bool
    default_policy: str

    def __init__(
        self,
        *,
        default_policy: str = "deny",
        tokens: Mapping[str, str] | None = None,
        management_tokens: Iterable[str] = (),
    ) -> None:
        self.enabled = True
        self.default_policy = _checked_default_policy(default_policy)
        self._lock = threading.Lock()
        self._tokens: dict[str, _StoredToken] = {}
        rules_by_secret = dict(tokens or {})
        management = list(management_tokens)
        both = sorted(set(management) & set(rules_by_secret))
        if both:
            raise ValueError(f"token {both[0]!r} is listed both as management and with rules")
        for secret in management:
            self._store(secret, EMPTY_POLICY, management=True)
        for secret, rules in rules_by_secret.items():
            self.add_token(secret, rules)

    @classmethod
    def disabled(cls) -> AclSystem:
        """ACLs off, as on a Consul agent without `acl.enabled`: every token may do anything."""
        system = cls(default_policy="allow")
        system.enabled = False
        return system

    @classmethod
    def from_file(cls, path: str, default_policy: str = "deny") -> AclSystem:
        """Load `{"tokens": {"<secret>": "<rules>"}, "management": ["<secret>"]}`."""
        with open(path, encoding="utf-8") as handle:
            try:
                document = json.load(handle)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not JSON: {exc}") from None
        tokens, management = _token_file_contents(document, path)
        return cls(default_policy=default_policy, tokens=tokens, management_tokens=management)

    def resolve(self, secret: str | None) -> Authorizer:
        """The authorizer for a request's secret; AclDenied('ACL not found') if unknown."""
        default_allow = self.default_policy == "allow"
        if not self.enabled:
            return Authorizer(
                accessor_id=ANONYMOUS_ACCESSOR_ID,
                policy=EMPTY_POLICY,
                default_allow=True,
                management=True,
            )
        if not secret or secret == ANONYMOUS_SECRET:
            return Authorizer(
                accessor_id=ANONYMOUS_ACCESSOR_ID, policy=EMPTY_POLICY, default_allow=default_allow
            )
        with self._lock:
            stored = self._tokens.get(secret)
        if stored is None:
            raise AclDenied(ACL_NOT_FOUND)
        return Authorizer(
            accessor_id=stored.accessor_id,
            policy=stored.policy,
            default_allow=default_allow,
            management=stored.management,
        )

    def add_token(self, secret: str, rules: str) -> None:
        """Create a token, or replace the rules of an existing one (its AccessorID stays)."""
        policy = parse_rules(rules)
        self._store(secret, policy, management=False)

    def revoke_token(self, secret: str) -> None:
        """Delete a token: its secret resolves to 'ACL not found' from now on."""
        with self._lock:
            if secret not in self._tokens:
                raise KeyError(f"no such ACL token {secret!r}")
            del self._tokens[secret]

    def _store(self, secret: str, policy: Policy, *, management: bool) -> None:
        _check_secret(secret)
        with self._lock:
            existing = self._tokens.get(secret)
            accessor_id = existing.accessor_id if existing else str(uuid.uuid4())
            self._tokens[secret] = _StoredToken(accessor_id, policy, management)


def _checked_default_policy(default_policy: str) -> str:
    if default_policy not in ("allow", "deny"):
        raise ValueError(f"default_policy must be 'allow' or 'deny', not {default_policy!r}")
    return default_policy


def _check_secret(secret: str) -> None:
    if not isinstance(secret, str) or not secret:
        raise ValueError("an ACL token secret must be a non-empty string")
    if secret == ANONYMOUS_SECRET:
        raise ValueError("the secret 'anonymous' is Consul's anonymous token; choose another")


def _token_file_contents(document: Any, path: str) -> tuple[dict[str, str], list[str]]:
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object with 'tokens' and 'management'")
    unknown = sorted(set(document) - {"tokens", "management"})
    if unknown:
        raise ValueError(f"{path}: unknown field {unknown[0]!r}; expected tokens, management")
    tokens = document.get("tokens", {})
    if not isinstance(tokens, dict) or not all(
        isinstance(secret, str) and isinstance(rules, str) for secret, rules in tokens.items()
    ):
        raise ValueError(f"{path}: 'tokens' must map each secret to its rules text")
    management = document.get("management", [])
    if not isinstance(management, list) or not all(isinstance(s, str) for s in management):
        raise ValueError(f"{path}: 'management' must be a list of secrets")
    return tokens, management
