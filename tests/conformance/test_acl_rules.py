"""The stand-in's ACL module decides and words refusals as Consul does (no HTTP here).

Expected behaviour comes from consul-semantics.md §6 and hashicorp/consul
`agent/http.go` (token sources), `acl/policy_authorizer.go` and `acl/policy_merger.go`
(rule matching and precedence) and `acl/errors.go` (403 wording).
"""

from __future__ import annotations

import http.client
import io
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.consul_double.acl import (
    ACL_NOT_FOUND,
    ANONYMOUS_ACCESSOR_ID,
    AclDenied,
    AclSystem,
    parse_rules,
    token_from_request,
)

ANONYMOUS_HINT = ". The anonymous token is used implicitly when a request does not specify a token."


def decisions(rules: str, probes: list[tuple[str, str, str]], default: str = "deny") -> list[bool]:
    authorizer = AclSystem(default_policy=default, tokens={"t": rules}).resolve("t")
    return [authorizer.allows(*probe) for probe in probes]


def denial(authorizer_call: object) -> str:
    assert callable(authorizer_call)
    with pytest.raises(AclDenied) as caught:
        authorizer_call()
    return caught.value.message


# --------------------------------------------------------------------------- token sources


def http_headers(raw: str) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(raw.encode("latin-1") + b"\r\n"))


@pytest.mark.parametrize(
    ("query", "headers", "expected"),
    [
        # ?token= beats both headers; X-Consul-Token beats Authorization.
        ({"token": ["q"]}, {"X-Consul-Token": "h", "Authorization": "Bearer b"}, "q"),
        ({}, {"X-Consul-Token": "h", "Authorization": "Bearer b"}, "h"),
        ({}, {"Authorization": "Bearer b"}, "b"),
        # An empty source does not count; the next one is used.
        ({"token": [""]}, {"X-Consul-Token": "h"}, "h"),
        ({}, {"X-Consul-Token": "", "Authorization": "Bearer b"}, "b"),
        # Only the first ?token= value is looked at, as Go's Query().Get does.
        ({"token": ["first", "second"]}, {}, "first"),
        # Header names are case-insensitive even in a plain dict.
        ({}, {"x-consul-token": "h"}, "h"),
        ({}, {"AUTHORIZATION": "Bearer b"}, "b"),
        # The scheme is case-insensitive; only the first word of the value is the token.
        ({}, {"Authorization": "bearer b"}, "b"),
        ({}, {"Authorization": "BEARER b extra words"}, "b"),
        ({}, {"Authorization": "Bearer   b"}, "b"),
        # Anything but "Bearer <token>" carries no token.
        ({}, {"Authorization": "Basic dXNlcjpwdw=="}, None),
        ({}, {"Authorization": "Bearer"}, None),
        ({}, {"Authorization": "Bearer "}, None),
        ({}, {"Authorization": "Bearerb"}, None),
        ({}, {}, None),
    ],
)
def test_token_sources_follow_consul_precedence(
    query: dict[str, list[str]], headers: dict[str, str], expected: str | None
) -> None:
    assert token_from_request(query, headers) == expected


def test_token_is_read_from_an_http_client_message() -> None:
    headers = http_headers("Authorization: Bearer from-bearer\r\nx-CONSUL-token: from-header\r\n")
    assert token_from_request({}, headers) == "from-header"
    assert token_from_request({}, http_headers("authorization: bearer b\r\n")) == "b"


# --------------------------------------------------------------------------- rule precedence

TREE_RULES = """
key_prefix ""        { policy = "read" }
key_prefix "app/"    { policy = "write" }
key_prefix "app/db/" { policy = "deny" }
key "app/db/public"  { policy = "read" }
"""


@pytest.mark.parametrize(
    ("key", "readable", "writable"),
    [
        ("elsewhere", True, False),  # only the catch-all "" prefix matches
        ("app/x", True, True),  # "app/" is longer than ""
        ("app/db/secret", False, False),  # the longest prefix "app/db/" denies
        ("app/db/public", True, False),  # an exact rule beats every prefix rule
        ("app/db/public2", False, False),  # the exact rule covers only its own name
        ("app/db", True, True),  # "app/db/" does not match "app/db"
    ],
)
def test_exact_rule_beats_prefixes_and_longest_prefix_wins(
    key: str, readable: bool, writable: bool
) -> None:
    probes = [("key", key, "read"), ("key", key, "write")]
    assert decisions(TREE_RULES, probes) == [readable, writable]


def test_exact_rule_beats_a_prefix_of_the_same_name() -> None:
    rules = 'key "a" { policy = "read" }\nkey_prefix "a" { policy = "write" }'
    probes = [("key", "a", "write"), ("key", "ab", "write")]
    assert decisions(rules, probes) == [False, True]


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        ("write", "deny", "deny"),
        ("deny", "write", "deny"),
        ("read", "write", "write"),
        ("write", "read", "write"),
        ("read", "list", "list"),
        ("list", "write", "write"),
    ],
)
def test_a_repeated_rule_merges_by_strength_deny_write_list_read(
    first: str, second: str, winner: str
) -> None:
    repeated = parse_rules(
        f'key_prefix "a/" {{ policy = "{first}" }}\nkey_prefix "a/" {{ policy = "{second}" }}'
    )
    assert repeated == parse_rules(f'key_prefix "a/" {{ policy = "{winner}" }}')


def test_prefix_rules_apply_to_every_named_resource() -> None:
    rules = """
    session_prefix "node-" { policy = "write" }
    service_prefix "web" { policy = "read" }
    node_prefix "" { policy = "read" }
    agent_prefix "node-1" { policy = "write" }
    """
    probes = [
        ("session", "node-7", "write"),
        ("session", "other", "read"),
        ("service", "web-api", "read"),
        ("service", "web-api", "write"),
        ("node", "anything", "read"),
        ("agent", "node-10", "write"),
        ("agent", "node-2", "read"),
    ]
    assert decisions(rules, probes) == [True, False, True, False, True, True, False]


def test_operator_is_a_single_setting_without_a_name() -> None:
    probes = [("operator", "", "read"), ("operator", "", "write")]
    assert decisions('operator = "read"', probes) == [True, False]
    assert decisions('operator = "write"', probes) == [True, True]
    assert decisions('operator = "deny"', probes, default="allow") == [False, False]


# --------------------------------------------------------------------------- default policy


def test_default_policy_decides_only_where_no_rule_matches() -> None:
    rules = 'key_prefix "open/" { policy = "write" }\nkey_prefix "closed/" { policy = "deny" }'
    probes = [
        ("key", "open/x", "write"),
        ("key", "closed/x", "read"),
        ("key", "unmatched", "write"),
        ("service", "web", "write"),
        ("operator", "", "write"),
    ]
    assert decisions(rules, probes, default="deny") == [True, False, False, False, False]
    assert decisions(rules, probes, default="allow") == [True, False, True, True, True]


@pytest.mark.parametrize("default", ["allow", "deny"])
def test_anonymous_token_gets_the_default_policy_only(default: str) -> None:
    system = AclSystem(default_policy=default, tokens={"t": 'key_prefix "" { policy = "write" }'})
    for secret in (None, "", "anonymous"):
        anonymous = system.resolve(secret)
        assert anonymous.accessor_id == ANONYMOUS_ACCESSOR_ID
        assert anonymous.allows("key", "x", "write") is (default == "allow")


def test_default_policy_must_be_allow_or_deny() -> None:
    with pytest.raises(ValueError, match="default_policy"):
        AclSystem(default_policy="permit")


# --------------------------------------------------------------------------- read, list, write


@pytest.mark.parametrize(
    ("level", "read", "list_", "write"),
    [
        ("read", True, False, False),
        ("list", True, True, False),
        ("write", True, True, True),
        ("deny", False, False, False),
    ],
)
def test_key_levels_grant_read_list_write(level: str, read: bool, list_: bool, write: bool) -> None:
    rules = f'key_prefix "k/" {{ policy = "{level}" }}'
    probes = [("key", "k/x", "read"), ("key", "k/x", "list"), ("key", "k/x", "write")]
    # The default is "allow" so that a denial can only come from the rule.
    assert decisions(rules, probes, default="allow") == [read, list_, write]


@pytest.mark.parametrize(
    ("resource", "access"), [("kv", "read"), ("key", "delete"), ("acl", "read")]
)
def test_an_unknown_resource_or_access_is_a_caller_bug(resource: str, access: str) -> None:
    authorizer = AclSystem().resolve(None)
    with pytest.raises(ValueError, match="unknown ACL"):
        authorizer.allows(resource, "x", access)


# --------------------------------------------------------------------------- 403 wording


def test_refusal_names_the_token_accessor_the_permission_and_the_resource() -> None:
    system = AclSystem(tokens={"secret-1": 'key_prefix "consul-leader/" { policy = "read" }'})
    authorizer = system.resolve("secret-1")
    uuid.UUID(authorizer.accessor_id)  # a real UUID, never the secret
    assert authorizer.accessor_id != ANONYMOUS_ACCESSOR_ID
    assert system.resolve("secret-1").accessor_id == authorizer.accessor_id

    message = denial(lambda: authorizer.require("key", "consul-leader/lock", "write"))
    assert message == (
        f"Permission denied: token with AccessorID '{authorizer.accessor_id}' "
        "lacks permission 'key:write' on \"consul-leader/lock\""
    )


def test_refusal_of_the_anonymous_token_explains_where_it_came_from() -> None:
    anonymous = AclSystem().resolve(None)
    message = denial(lambda: anonymous.require("session", "node-1", "write"))
    assert message == (
        "Permission denied: anonymous token lacks permission 'session:write' on \"node-1\""
        + ANONYMOUS_HINT
    )


def test_refusal_of_an_unnamed_resource_has_no_target() -> None:
    authorizer = AclSystem(tokens={"t": 'operator = "read"'}).resolve("t")
    message = denial(lambda: authorizer.require("operator", "", "write"))
    assert message.endswith("lacks permission 'operator:write'")


def test_refusal_is_the_exception_text_and_an_allowed_request_raises_nothing() -> None:
    authorizer = AclSystem(tokens={"t": 'key "k" { policy = "list" }'}).resolve("t")
    authorizer.require("key", "k", "list")
    with pytest.raises(AclDenied) as caught:
        authorizer.require("key", "k", "write")
    assert str(caught.value) == caught.value.message
    assert "'key:write' on \"k\"" in caught.value.message


def test_unknown_secret_is_acl_not_found() -> None:
    with pytest.raises(AclDenied) as caught:
        AclSystem(default_policy="allow").resolve("nobody-has-this")
    assert caught.value.message == ACL_NOT_FOUND == "ACL not found"


# --------------------------------------------------------------------------- HCL and JSON forms

HCL_SAMPLE = """
# Comments in both styles are accepted.
key_prefix "consul-leader/" {
  policy = "write"   // trailing comment
}
key "consul-leader/frozen" { policy = "read" }
/* a block
   comment */
session_prefix "" { policy = "write" }
service "web" { policy = "write", intentions = "read" }
service_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
agent "node-1" { "policy" = "read" }
operator = "read"
"""

JSON_SAMPLE = """
{
  "key_prefix": {"consul-leader/": {"policy": "write"}},
  "key": {"consul-leader/frozen": {"policy": "read"}},
  "session_prefix": {"": {"policy": "write"}},
  "service": [{"web": {"policy": "write", "intentions": "read"}}],
  "service_prefix": {"": {"policy": "read"}},
  "node_prefix": {"": {"policy": "read"}},
  "agent": {"node-1": {"policy": "read"}},
  "operator": "read"
}
"""

SAMPLE_PROBES = [
    (resource, name, access)
    for resource, name in [
        ("key", "consul-leader/lock"),
        ("key", "consul-leader/frozen"),
        ("key", "other"),
        ("session", "node-9"),
        ("service", "web"),
        ("service", "db"),
        ("node", "node-2"),
        ("agent", "node-1"),
        ("agent", "node-2"),
        ("operator", ""),
    ]
    for access in ("read", "list", "write")
]


def test_hcl_and_json_forms_compile_to_the_same_policy() -> None:
    assert parse_rules(HCL_SAMPLE) == parse_rules(JSON_SAMPLE)
    assert decisions(HCL_SAMPLE, SAMPLE_PROBES) == decisions(JSON_SAMPLE, SAMPLE_PROBES)
    # Guard against two empty policies agreeing: the sample really grants and refuses.
    assert len(set(decisions(HCL_SAMPLE, SAMPLE_PROBES))) == 2


def test_json_keeps_repeated_names_and_merges_them_like_hcl() -> None:
    repeated_keys = '{"key_prefix": {"a/": {"policy": "write"}, "a/": {"policy": "deny"}}}'
    assert parse_rules(repeated_keys) == parse_rules('key_prefix "a/" { policy = "deny" }')


def test_empty_rules_grant_nothing_beyond_the_default() -> None:
    for empty in ("", "   \n", "# nothing\n// at all\n", "{}"):
        assert decisions(empty, [("key", "x", "read")], default="deny") == [False]
        assert decisions(empty, [("key", "x", "read")], default="allow") == [True]


# An independent oracle: Consul's matching rules restated over a plain list of rules.
LEVEL_GRANTS = {
    "read": {"read"},
    "list": {"read", "list"},
    "write": {"read", "list", "write"},
    "deny": set(),
}
STRENGTH = ["read", "list", "write", "deny"]


def oracle(rules: list[tuple[str, str, str]], resource: str, name: str, access: str) -> bool:
    exact = [level for kind, label, level in rules if kind == resource and label == name]
    prefixes = [
        (label, level)
        for kind, label, level in rules
        if kind == f"{resource}_prefix" and name.startswith(label)
    ]
    if exact:
        level = max(exact, key=STRENGTH.index)
    elif prefixes:
        longest = max(len(label) for label, _ in prefixes)
        candidates = [level for label, level in prefixes if len(label) == longest]
        level = max(candidates, key=STRENGTH.index)
    else:
        return False  # default policy deny
    return access in LEVEL_GRANTS[level]


def render_hcl(rules: list[tuple[str, str, str]]) -> str:
    return "\n".join(
        f"{kind} {json.dumps(label)} {{ policy = {json.dumps(level)} }}"
        for kind, label, level in rules
    )


def render_json(rules: list[tuple[str, str, str]]) -> str:
    by_kind: dict[str, list[dict[str, dict[str, str]]]] = {}
    for kind, label, level in rules:
        by_kind.setdefault(kind, []).append({label: {"policy": level}})
    return json.dumps(by_kind)


NAMES = ["", "a", "a/", "a/b", "a/b/", "a/bc", "b"]
RULE = st.tuples(
    st.sampled_from(["key", "key_prefix", "service", "service_prefix"]),
    st.sampled_from(NAMES),
    st.sampled_from(["read", "write", "deny"]),
) | st.tuples(st.sampled_from(["key", "key_prefix"]), st.sampled_from(NAMES), st.just("list"))


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(RULE, max_size=8))
def test_random_rules_decide_like_the_oracle_in_both_forms(
    rules: list[tuple[str, str, str]],
) -> None:
    probes = [
        (resource, name, access)
        for resource in ("key", "service")
        for name in [*NAMES, "a/b/c", "c"]
        for access in ("read", "list", "write")
    ]
    expected = [oracle(rules, *probe) for probe in probes]
    assert parse_rules(render_hcl(rules)) == parse_rules(render_json(rules))
    assert decisions(render_hcl(rules), probes) == expected


# --------------------------------------------------------------------------- malformed rules


@pytest.mark.parametrize(
    ("rules", "complaint"),
    [
        ('key_prefix "a/" { policy = "writ" }', "Invalid key_prefix policy"),
        ('key "a" { }', "Invalid key policy"),
        ('session "n" { policy = "list" }', "Invalid session policy"),
        ('operator = "list"', "Invalid operator policy"),
        ('key "a" { polcy = "read" }', "unknown attribute 'polcy'"),
        ('key "a" { policy = "read" policy = "write" }', "policy set twice"),
        ('service "web" { intentions = "all", policy = "read" }', "intentions policy"),
        ('keys "a" { policy = "read" }', "unsupported rule kind 'keys'"),
        ('event_prefix "" { policy = "read" }', "unsupported rule kind 'event_prefix'"),
        ('operator "x" { policy = "read" }', "operator takes a value"),
        ('key_prefix = "read"', "key_prefix needs a quoted name"),
        ('key_prefix a/ { policy = "read" }', "line 1, column 12: expected a quoted name"),
        ('key_prefix "a/" policy = "read"', "expected { after"),
        ('\nkey_prefix "a/" { policy = "read"', "rules end early"),
        ('key_prefix "a/" { policy = read }', "line 1, column 28: expected a quoted value"),
        ('key_prefix "a/ { policy = "read" }', "expected { after"),
        ('key_prefix "a/" { policy = "read" } ; ', "line 1, column 37: unexpected character ';'"),
        ('key_prefix "a/" {\n policy = "read }', "line 2, column 11: unterminated string"),
        ('/* never closed\nkey "a" { policy = "read" }', "unterminated /* comment"),
        ('key "a" { policy = "read" } }', "expected a rule kind"),
        ('{"key_prefix": {"a/": {"policy": "read"}}', "Failed to parse ACL rules: line 1"),
        ('{"key": {"a": {"policy": 1}}}', 'JSON key "a" must be an object of strings'),
        ('{"key": {"a": {"policy": "read", "policy": "write"}}}', "sets policy twice"),
        ('{"key": 3}', 'JSON "key" must be a quoted level or an object'),
        ('{"key": ["a"]}', 'JSON "key" must map names'),
        ('{"operator": {"x": {"policy": "read"}}}', "operator takes a value"),
        ("[1]", "unexpected character '['"),
    ],
)
def test_malformed_rules_are_rejected_with_a_reason(rules: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rules(rules)
    assert complaint in str(caught.value)


def test_error_names_the_line_of_the_bad_rule() -> None:
    rules = 'key_prefix "a/" { policy = "read" }\n\n# fine so far\nservice "x" { policy = "own" }'
    with pytest.raises(ValueError, match=r"\(line 4\)"):
        parse_rules(rules)


def test_a_token_with_bad_rules_is_never_stored() -> None:
    system = AclSystem()
    with pytest.raises(ValueError):
        system.add_token("t", 'key "a" { policy = "nope" }')
    with pytest.raises(AclDenied, match=ACL_NOT_FOUND):
        system.resolve("t")
    with pytest.raises(ValueError):
        AclSystem(tokens={"t": "key"})


# --------------------------------------------------------------------------- token lifecycle


def test_revoked_token_is_acl_not_found() -> None:
    system = AclSystem(tokens={"t": 'key "a" { policy = "write" }'})
    assert system.resolve("t").allows("key", "a", "write")
    system.revoke_token("t")
    with pytest.raises(AclDenied) as caught:
        system.resolve("t")
    assert caught.value.message == "ACL not found"
    with pytest.raises(KeyError):
        system.revoke_token("t")


def test_updating_rules_keeps_the_accessor_and_recreating_gets_a_new_one() -> None:
    system = AclSystem(tokens={"t": 'key "a" { policy = "read" }'})
    original = system.resolve("t").accessor_id
    system.add_token("t", 'key "a" { policy = "write" }')
    updated = system.resolve("t")
    assert (updated.accessor_id, updated.allows("key", "a", "write")) == (original, True)
    system.revoke_token("t")
    system.add_token("t", 'key "a" { policy = "write" }')
    assert system.resolve("t").accessor_id != original


def test_each_token_has_its_own_accessor() -> None:
    system = AclSystem(tokens={"one": "", "two": ""}, management_tokens=["root"])
    accessors = {system.resolve(secret).accessor_id for secret in ("one", "two", "root")}
    assert len(accessors) == 3


def test_management_token_allows_everything_under_default_deny() -> None:
    root = AclSystem(default_policy="deny", management_tokens=["root"]).resolve("root")
    assert root.is_management
    for resource in ("key", "session", "service", "node", "agent", "operator"):
        for access in ("read", "list", "write"):
            assert root.allows(resource, "anything", access)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"tokens": {"anonymous": ""}}, "anonymous"),
        ({"management_tokens": [""]}, "non-empty"),
        ({"tokens": {"t": ""}, "management_tokens": ["t"]}, "both as management and with rules"),
    ],
)
def test_unusable_secrets_are_rejected(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        AclSystem(**kwargs)  # type: ignore[arg-type]


def test_disabled_acls_allow_any_token_anything() -> None:
    system = AclSystem.disabled()
    assert not system.enabled
    for secret in (None, "never-created"):
        assert system.resolve(secret).allows("operator", "", "write")


def test_tokens_load_from_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "acl.json"
    path.write_text(
        json.dumps(
            {"tokens": {"app": 'key_prefix "app/" { policy = "write" }'}, "management": ["root"]}
        )
    )
    system = AclSystem.from_file(str(path), default_policy="deny")
    assert system.default_policy == "deny"
    assert system.resolve("app").allows("key", "app/x", "write")
    assert not system.resolve("app").allows("key", "other", "read")
    assert system.resolve("root").allows("operator", "", "write")


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("not json", "not JSON"),
        ('["app"]', "expected a JSON object"),
        ('{"token": {}}', "unknown field 'token'"),
        ('{"tokens": {"app": 3}}', "'tokens' must map each secret"),
        ('{"management": "root"}', "'management' must be a list"),
        ('{"tokens": {"app": "key"}}', "expected a quoted name after key"),
    ],
)
def test_a_bad_token_file_is_rejected(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / "acl.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=complaint):
        AclSystem.from_file(str(path))


# --------------------------------------------------------------------------- sidecar policy

# Least privilege for one consul-leader sidecar guarding service "web" on node "node-1", with
# its lock at consul-leader/web/lock. Add `agent "node-1" { policy = "read" }` only if the
# sidecar reads /v1/agent/self.
SIDECAR_RULES = """
# The lock key and nothing outside its own subtree.
key_prefix "consul-leader/web/" {
  policy = "write"
}
# Sessions are created on the sidecar's own node.
session "node-1" {
  policy = "write"
}
# Tag rewrites and the TTL check touch only the guarded service.
service "web" {
  policy = "write"
}
# Discovery: health and catalog reads of services and the nodes running them.
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
"""


@pytest.mark.parametrize(
    ("resource", "name", "access", "allowed"),
    [
        ("key", "consul-leader/web/lock", "write", True),  # ?acquire, ?release
        ("key", "consul-leader/web/lock", "read", True),  # blocking watch of the lock
        ("session", "node-1", "write", True),  # create, renew, destroy
        ("session", "node-1", "read", True),  # session/info on its own session
        ("service", "web", "write", True),  # re-register with the primary tag
        ("service", "db", "read", True),
        ("node", "node-2", "read", True),
        ("key", "consul-leader/db/lock", "write", False),  # another service's lock
        ("key", "consul-leader/web", "write", False),  # the subtree needs its slash
        ("key", "app/config", "read", False),
        ("session", "node-2", "write", False),  # sessions on other nodes
        ("service", "db", "write", False),
        ("service", "web-sidecar", "write", False),  # exact rule, not a prefix
        ("node", "node-1", "write", False),
        ("agent", "node-1", "read", False),
        ("operator", "", "read", False),
    ],
)
def test_least_privilege_sidecar_policy(
    resource: str, name: str, access: str, allowed: bool
) -> None:
    assert decisions(SIDECAR_RULES, [(resource, name, access)]) == [allowed]
