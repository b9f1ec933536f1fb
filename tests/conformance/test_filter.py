"""Conformance of the stand-in's ``?filter=`` language with Consul (go-bexpr v0.1.2).

Expected texts marked "consul#NNNN" are copied from error bodies real Consul returned in those
public issues; the rest follow go-bexpr v0.1.2's grammar, validation and evaluation code.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.consul_double.filter import (
    AGENT_CHECK,
    AGENT_SERVICE,
    CATALOG_SERVICE,
    HEALTH_SERVICE,
    FilterError,
    Struct,
    compile_filter,
)

PREFIX = "Failed to create boolean expression evaluator: "
TASK_UUID = "8a3c9a5e-2f4b-4c1d-9e7f-0a1b2c3d4e5f"

# A service as Nomad registers it and /v1/agent/services serialises it.
NOMAD_SERVICE: dict[str, Any] = {
    "ID": f"_nomad-task-{TASK_UUID}-group-db-db-postgres",
    "Service": "db",
    "Tags": ["primary", "v14"],
    "Meta": {"session": "4f1e0b7a", "external-source": "nomad", "empty": ""},
    "Port": 5432,
    "Address": "10.0.0.7",
    "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.7", "Port": 5432}},
    "Weights": {"Passing": 1, "Warning": 1},
    "EnableTagOverride": True,
    "Datacenter": "dc1",
}
PLAIN_SERVICE: dict[str, Any] = {
    "ID": "web-1", "Service": "web", "Tags": [], "Meta": {}, "Port": 80, "Address": "",
    "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False, "Datacenter": "dc1",
}
SIDECAR_SERVICE: dict[str, Any] = {
    **PLAIN_SERVICE,
    "Kind": "connect-proxy",
    "ID": "web-1-sidecar-proxy",
    "Proxy": {"DestinationServiceName": "web", "LocalServicePort": 8080,
              "Upstreams": [{"DestinationName": "db", "LocalBindPort": 9191}]},
}
HEALTH_ENTRY: dict[str, Any] = {
    "Node": {"ID": "1f2e", "Node": "node-1", "Address": "10.0.0.7", "Datacenter": "dc1",
             "TaggedAddresses": {"lan": "10.0.0.7"}, "Meta": {"rack": "r1"}},
    "Service": {"ID": "db-1", "Service": "db", "Tags": ["primary"], "Address": "", "Meta": {},
                "Port": 5432, "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False, "Proxy": {}, "Connect": {}},
    "Checks": [
        {"Node": "node-1", "CheckID": "serfHealth", "Name": "Serf Health Status",
         "Status": "passing", "ServiceID": "", "ServiceName": "", "ServiceTags": []},
        {"Node": "node-1", "CheckID": "service:db-1", "Name": "Service 'db' check",
         "Status": "critical", "ServiceID": "db-1", "ServiceName": "db",
         "ServiceTags": ["primary"]},
    ],
}
CATALOG_ENTRY: dict[str, Any] = {
    "ID": "1f2e", "Node": "node-1", "Address": "10.0.0.7", "Datacenter": "dc1",
    "TaggedAddresses": None, "NodeMeta": {"os": "linux"}, "ServiceKind": "",
    "ServiceID": "db-1", "ServiceName": "db", "ServiceTags": ["primary"],
    "ServiceAddress": "", "ServiceWeights": {"Passing": 1, "Warning": 1},
    "ServiceMeta": {"leader": "true"}, "ServicePort": 5432, "ServiceEnableTagOverride": False,
    "ServiceProxy": {}, "ServiceConnect": {}, "CreateIndex": 30, "ModifyIndex": 30,
}
AGENT_CHECK_ENTRY: dict[str, Any] = HEALTH_ENTRY["Checks"][1]


def matches(expression: str, item: dict[str, Any], schema: Struct | None = None) -> bool:
    return compile_filter(expression, schema=schema)(item)


def error_text(expression: str, schema: Struct | None = AGENT_SERVICE,
               item: dict[str, Any] | None = None) -> str:
    with pytest.raises(FilterError) as raised:
        compile_filter(expression, schema=schema)(item if item is not None else NOMAD_SERVICE)
    return str(raised.value)


# --- the sidecar's own filters -------------------------------------------------------------

SIDECAR_USAGE = [
    (f'ID matches "_nomad-task-{TASK_UUID}-.*"', True),
    ('ID matches "_nomad-task-00000000-0000-0000-0000-000000000000-.*"', False),
    ('"primary" in Tags', True),
    ('"secondary" in Tags', False),
    ('Meta.session == "4f1e0b7a"', True),
    ('Meta.session == "someone-else"', False),
    ('Service == "db" and not ("primary" in Tags)', False),
    ('Service == "db" and not ("secondary" in Tags)', True),
]


@pytest.mark.parametrize("schema", [AGENT_SERVICE, None], ids=["schema", "detected"])
@pytest.mark.parametrize(("expression", "expected"), SIDECAR_USAGE)
def test_sidecar_filters_select_the_nomad_task(expression: str, expected: bool,
                                               schema: Struct | None) -> None:
    assert matches(expression, NOMAD_SERVICE, schema) is expected


# --- operators on strings, lists and maps ----------------------------------------------------

AGENT_SERVICE_TABLE = [
    # strings: equality, substring membership, regex search
    ('Service == "db"', True),
    ('Service != "db"', False),
    ('Service == "DB"', False),  # values compare case-sensitively
    ('"d" in Service', True),
    ('"x" not in Service', True),
    ('Service contains "b"', True),
    ('Service not contains "b"', False),
    ('"" in Service', True),
    ('Address matches "^10\\\\.0\\\\."', True),
    ("Address matches `^10\\.0\\.`", True),
    ('Address not matches "^192"', True),
    ('ID matches "postgres"', True),  # search, not full match
    ('ID matches "^postgres"', False),
    # lists: element membership and emptiness
    ('"v14" in Tags', True),
    ('"v1" in Tags', False),  # whole elements, not substrings
    ('Tags contains "primary"', True),
    ('"primary" not in Tags', False),
    ("Tags is empty", False),
    ("Tags is not empty", True),
    # maps: key membership, emptiness and per-key values
    ('"session" in Meta', True),
    ('"4f1e0b7a" in Meta', False),  # keys, not values
    ('Meta contains "external-source"', True),
    ("Meta is not empty", True),
    ('Meta["external-source"] == "nomad"', True),
    ('Meta.empty == ""', True),
    ('Meta.session matches "^4f"', True),
    ('"1e0" in Meta.session', True),
    # an absent key: nothing equals it, is in it or is non-empty; every other operator holds
    ('Meta.absent == ""', False),
    ('Meta.absent != "x"', True),
    ('"x" in Meta.absent', False),
    ('"x" not in Meta.absent', True),
    ('Meta.absent matches "x"', True),
    ('Meta.absent not matches "x"', True),
    ('TaggedAddresses.wan.Address == "10.0.0.7"', False),
    ('TaggedAddresses.lan_ipv4.Address == "10.0.0.7"', True),
    ("TaggedAddresses.lan_ipv4.Port == 5432", True),
    # numbers and booleans are coerced to the field's Go type
    ("Port == 5432", True),
    ('Port == "5432"', True),
    ("Port != 5432", False),
    ('Port == "0x1538"', True),
    ('Port == "012470"', True),  # a leading 0 means octal to Go
    ('Port == "5_432"', True),
    ("Weights.Passing == 1", True),
    ("EnableTagOverride == true", True),
    ("EnableTagOverride == T", True),
    ('EnableTagOverride != "1"', False),
    # bare words are values too
    ("Service == db", True),
    ("primary in Tags", True),
    ("Meta.external_source == nomad", False),
]


@pytest.mark.parametrize("schema", [AGENT_SERVICE, None], ids=["schema", "detected"])
@pytest.mark.parametrize(("expression", "expected"), AGENT_SERVICE_TABLE)
def test_agent_service_operators(expression: str, expected: bool,
                                 schema: Struct | None) -> None:
    assert matches(expression, NOMAD_SERVICE, schema) is expected


HEALTH_TABLE = [
    ('Service.Service == "db"', True),
    ('"primary" in Service.Tags', True),
    ('Node.Meta.rack == "r1"', True),
    ('Node.TaggedAddresses.lan == "10.0.0.7"', True),
    # a selector through a list holds when any element satisfies it
    ('Checks.Status == "critical"', True),
    ('Checks.Status != "passing"', True),
    ('Checks.Status == "warning"', False),
    ('Checks.CheckID matches "^service:"', True),
    ('"primary" in Checks.ServiceTags', True),
    ("Checks is not empty", True),
    ("Service.Weights.Passing == 1", True),
    ("Service.Connect.Native == false", True),
]


@pytest.mark.parametrize(("expression", "expected"), HEALTH_TABLE)
def test_health_service_entries(expression: str, expected: bool) -> None:
    assert matches(expression, HEALTH_ENTRY, HEALTH_SERVICE) is expected
    assert matches(expression, HEALTH_ENTRY) is expected


CATALOG_TABLE = [
    ('"primary" in ServiceTags', True),
    ('ServiceMeta.leader == "true"', True),
    ('NodeMeta.os == "linux"', True),
    ("ServicePort == 5432", True),
    ("TaggedAddresses is empty", True),  # null in JSON, an empty map in Go
    ('ServiceProxy.DestinationServiceName == ""', True),
]


@pytest.mark.parametrize(("expression", "expected"), CATALOG_TABLE)
def test_catalog_service_entries(expression: str, expected: bool) -> None:
    assert matches(expression, CATALOG_ENTRY, CATALOG_SERVICE) is expected
    assert matches(expression, CATALOG_ENTRY) is expected


@pytest.mark.parametrize(("expression", "expected"), [
    ('Status == "critical"', True),
    ('ServiceName == "db" and "primary" in ServiceTags', True),
    ('CheckID == "serfHealth"', False),
])
def test_agent_checks(expression: str, expected: bool) -> None:
    assert matches(expression, AGENT_CHECK_ENTRY, AGENT_CHECK) is expected
    assert matches(expression, AGENT_CHECK_ENTRY) is expected


def test_pointer_fields_work_when_present() -> None:
    assert matches('Proxy.DestinationServiceName == "web"', SIDECAR_SERVICE, AGENT_SERVICE)
    assert matches('Proxy.Upstreams.DestinationName == "db"', SIDECAR_SERVICE, AGENT_SERVICE)
    assert matches("Proxy.Upstreams is not empty", SIDECAR_SERVICE, AGENT_SERVICE)
    assert matches('Kind == "connect-proxy"', SIDECAR_SERVICE, AGENT_SERVICE)
    assert matches('Kind == ""', PLAIN_SERVICE, AGENT_SERVICE)  # omitted in JSON, "" in Go


def test_selecting_through_a_nil_pointer_fails_the_request() -> None:
    # Real Consul panics on the nil *Proxy and drops the connection; the stand-in says so.
    predicate = compile_filter('Proxy.DestinationServiceName == "web"', schema=AGENT_SERVICE)
    with pytest.raises(FilterError, match="zero Value") as raised:
        predicate(PLAIN_SERVICE)
    assert raised.value.status == 500


# --- precedence, grouping, quoting -----------------------------------------------------------


def flags_item(a: bool, b: bool, c: bool) -> dict[str, Any]:
    meta = {name: "1" if value else "0" for name, value in zip("abc", (a, b, c), strict=True)}
    return {**PLAIN_SERVICE, "Meta": meta}


TRUTH_TABLE = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]
PRECEDENCE_CASES = [
    ("Meta.a == 1 or Meta.b == 1 and Meta.c == 1", lambda a, b, c: a or (b and c)),
    ("Meta.a == 1 and Meta.b == 1 or Meta.c == 1", lambda a, b, c: (a and b) or c),
    ("(Meta.a == 1 or Meta.b == 1) and Meta.c == 1", lambda a, b, c: (a or b) and c),
    ("not Meta.a == 1 and Meta.b == 1", lambda a, b, c: (not a) and b),
    ("not (Meta.a == 1 and Meta.b == 1)", lambda a, b, c: not (a and b)),
    ("not not Meta.a == 1", lambda a, b, c: a),
    ("Meta.a == 1 and not Meta.b == 1 or Meta.c == 1", lambda a, b, c: (a and not b) or c),
    ("((Meta.a == 1))", lambda a, b, c: a),
    ("\t( Meta.a == 1 )\n", lambda a, b, c: a),
]


@pytest.mark.parametrize(("expression", "truth"), PRECEDENCE_CASES,
                         ids=[case[0] for case in PRECEDENCE_CASES])
def test_precedence_and_grouping(expression: str, truth: Any) -> None:
    predicate = compile_filter(expression, schema=AGENT_SERVICE)
    for a, b, c in TRUTH_TABLE:
        assert predicate(flags_item(a, b, c)) is truth(a, b, c), (a, b, c)


QUOTING_CASES = [
    ('Meta.v == "tab\\there"', "tab\there"),
    ('Meta.v == "caf\\u00e9"', "café"),
    ('Meta.v == "caf\\xc3\\xa9"', "café"),  # Go strings are bytes: \x escapes build UTF-8
    ('Meta.v == "\\101\\x42\\U00000043"', "ABC"),
    ('Meta.v == "back\\\\slash"', "back\\slash"),
    ('Meta.v == "say \\x22hi\\x22"', 'say "hi"'),
    ('Meta.v == `raw \\n "quotes"`', 'raw \\n "quotes"'),
    ("Meta.v == `line\r\nbreak`", "line\nbreak"),  # Go drops \r from raw strings
    ('Meta.v == "é"', "é"),
    ("Meta.v == 12.5", "12.5"),
    ("Meta.v == -3", "-3"),
    ("Meta.v == a.b_c", "a.b_c"),
]


@pytest.mark.parametrize(("expression", "value"), QUOTING_CASES)
def test_quoting_and_literals(expression: str, value: str) -> None:
    item = {**PLAIN_SERVICE, "Meta": {"v": value}}
    assert matches(expression, item, AGENT_SERVICE)
    assert not matches(expression, {**PLAIN_SERVICE, "Meta": {"v": value + "!"}}, AGENT_SERVICE)


def test_empty_expression_matches_everything() -> None:
    assert compile_filter("")(NOMAD_SERVICE)
    assert compile_filter("", schema=AGENT_SERVICE)({})


# --- regular expressions follow RE2 ----------------------------------------------------------

REGEX_CASES = [
    ("db$", "db\n", False),  # RE2 $ is end of text, Python's would match before the \n
    ("(?m)db$", "db\nx", True),
    ("^db\\z", "db", True),
    ("(?i)DB", "db", True),
    ("x(?i)B|D", "d", True),  # a mid-pattern flag reaches across |
    ("[[:digit:]]{3}", "a123", True),
    ("\\d", "٣", False),  # \d is ASCII-only in RE2
    ("a{,2}", "a{,2}", True),  # not a repeat in RE2: a literal brace
    ("\\x{41}", "A", True),
    ("\\Q.*\\E", "a.*", True),
    ("a.+?b", "aXb", True),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), REGEX_CASES)
def test_regex_semantics_are_re2(pattern: str, value: str, expected: bool) -> None:
    item = {**PLAIN_SERVICE, "Meta": {"v": value}}
    assert matches(f"Meta.v matches `{pattern}`", item, AGENT_SERVICE) is expected


# --- errors: text and status -----------------------------------------------------------------

ERROR_CASES = [
    # consul#7338, byte for byte
    ("foo", '1:4 (3): no match found, expected: "!=", ".", "==", "[", [ \\t\\r\\n] or '
            "[a-zA-Z0-9_]"),
    # consul#9441 (there behind an "rpc error making call: " prefix)
    ("Address == 10.10.10.10 ", '1:17 (16): rule "number": Invalid number literal'),
    ('Service == "db', '1:15 (14): rule "string": Unterminated string literal'),
    ('(Service == "db"', '1:17 (16): rule "grouping": Unmatched parentheses'),
    ('Meta[session] == "x"', '1:6 (5): rule "index": Invalid index'),
    ('Meta["session" == "x"', '1:16 (15): rule "index": Unclosed index expression'),
    ('"db" in 42', '1:9 (8): rule "match": Invalid selector'),
    ('Service == "a\\qb"', '1:12 (11): rule "string": invalid syntax'),
    ('Service == "a\\"b"', '1:12 (11): rule "string": invalid syntax'),  # no \" inside "..."
    ('Service == "é\\z"', '1:12 (11): rule "string": invalid syntax'),
    ("Service ==", '1:11 (10): no match found, expected: "-", "0", "\\"", "`", [ \\t\\r\\n], '
                   "[1-9] or [a-zA-Z]"),
    ('Service == "db" and', '1:20 (19): no match found, expected: [ \\t\\r\\n]'),
    # validation against the Go type
    ('service == "db"', 'Selector "service" is not valid'),  # field names are case-sensitive
    ('Meta.session.x == "y"', 'Selector "Meta.session.x" is not valid'),
    ('CreateIndex == 1', 'Selector "CreateIndex" is not valid'),  # bexpr:"-" in Consul
    ("Service is empty", 'Invalid match operator "Is Empty" for selector "Service"'),
    ('Tags == "primary"', 'Invalid match operator "Equal" for selector "Tags"'),
    ('Port matches "54"', 'Invalid match operator "Matches" for selector "Port"'),
    ("Weights is empty", 'Invalid match operator "Is Empty" for selector "Weights"'),
    ('Port == "fifty"', 'Failed to coerce value "fifty" for selector "Port": '
                        'strconv.ParseInt: parsing "fifty": invalid syntax'),
    ("Port == 1.5", 'Failed to coerce value "1.5" for selector "Port": '
                    'strconv.ParseInt: parsing "1.5": invalid syntax'),
    ("Port == 9223372036854775808", 'Failed to coerce value "9223372036854775808" for selector '
                                    '"Port": strconv.ParseInt: parsing "9223372036854775808": '
                                    "value out of range"),
    ('EnableTagOverride == "yes"', 'Failed to coerce value "yes" for selector '
                                   '"EnableTagOverride": strconv.ParseBool: parsing "yes": '
                                   "invalid syntax"),
    ('ID matches "("', 'Failed to compile regular expression "(": '
                       "error parsing regexp: missing closing ): `(`"),
    ('ID matches "a**"', 'Failed to compile regular expression "a**": '
                         "error parsing regexp: invalid nested repetition operator: `**`"),
    ('ID matches "(?=x)"', 'Failed to compile regular expression "(?=x)": '
                           "error parsing regexp: invalid or unsupported Perl syntax: `(?=`"),
    ('ID matches "(a)\\\\1"', 'Failed to compile regular expression "(a)\\\\1": '
                              "error parsing regexp: invalid escape sequence: `\\1`"),
]


@pytest.mark.parametrize(("expression", "message"), ERROR_CASES)
def test_bad_filters_fail_with_consuls_text(expression: str, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        compile_filter(expression, schema=AGENT_SERVICE)
    assert str(raised.value) == PREFIX + message
    assert raised.value.status == 500
    assert isinstance(raised.value, ValueError)


def test_type_errors_surface_even_when_nothing_would_be_filtered() -> None:
    # Consul checks against the result type, so an unknown field fails an empty listing too.
    with pytest.raises(FilterError, match='Selector "Nope" is not valid'):
        compile_filter('Nope == "x"', schema=AGENT_SERVICE)


def test_without_a_schema_type_errors_come_from_the_predicate() -> None:
    predicate = compile_filter('Nope == "x"')  # parses fine; the shape is not known yet
    for _ in range(2):  # remembered per shape, raised on every call
        with pytest.raises(FilterError) as raised:
            predicate(NOMAD_SERVICE)
        assert str(raised.value) == PREFIX + 'Selector "Nope" is not valid'


def test_a_selector_valid_elsewhere_is_invalid_for_this_shape() -> None:
    assert error_text('ServiceName == "db"', schema=None) == (
        PREFIX + 'Selector "ServiceName" is not valid')
    assert matches('ServiceName == "db"', CATALOG_ENTRY)


def test_unknown_shapes_are_typed_from_their_json() -> None:
    item = {"Name": "x", "Count": 3, "On": True, "Labels": ["a"], "NodeMeta": {"k": "v"},
            "Inner": {"Deep": "y"}}
    assert matches('Name == x and Count == "3" and On == true and a in Labels', item)
    assert matches('NodeMeta.k == v and NodeMeta.missing != v and Inner.Deep == "y"', item)
    assert error_text('Inner.Other == "y"', schema=None, item=item) == (
        PREFIX + 'Selector "Inner.Other" is not valid')


@pytest.mark.parametrize(("expression", "expected"), [
    ("NodeMeta.present is not empty", True),
    ("NodeMeta.absent is not empty", False),  # an absent key is never non-empty...
    ("NodeMeta.absent is empty", True),  # ...and always empty
    ('"x" in NodeMeta.absent', False),
    ('"x" not in NodeMeta.absent', True),
])
def test_absent_keys_in_maps_of_lists(expression: str, expected: bool) -> None:
    assert matches(expression, {"NodeMeta": {"present": ["x"]}}) is expected


def test_json_that_no_go_value_could_produce_is_reported() -> None:
    broken = {**NOMAD_SERVICE, "Port": "5432"}
    with pytest.raises(FilterError, match="JSON str where Go has a int"):
        compile_filter("Port == 5432", schema=AGENT_SERVICE)(broken)


def test_one_compiled_filter_serves_many_items() -> None:
    predicate = compile_filter('"primary" in Tags or Service == "web"', schema=AGENT_SERVICE)
    items = [NOMAD_SERVICE, PLAIN_SERVICE, {**PLAIN_SERVICE, "Service": "cache"}]
    assert [predicate(item) for item in items] == [True, True, False]


def test_absurd_nesting_is_refused_not_crashed() -> None:
    with pytest.raises(FilterError, match="nests too deeply"):
        compile_filter("(" * 5000 + 'Service == "db"' + ")" * 5000)


# --- properties -------------------------------------------------------------------------------

TOKENS = ["Service", "Tags", "Meta", "Port", "Checks", "Status", ".", "[", "]", '"', "`", "(",
          ")", " ", "\n", "==", "!=", "in", "not", "and", "or", "is", "empty", "contains",
          "matches", "1", "-", "0", ".5", "x", "\\", "é", '"db"', "`r`", '"\\u00e9"', '"(?="']
ITEMS = [NOMAD_SERVICE, PLAIN_SERVICE, SIDECAR_SERVICE, HEALTH_ENTRY, CATALOG_ENTRY,
         AGENT_CHECK_ENTRY, {}, {"Service": None, "ID": None}, {"Odd": [None, {"x": 1}]}]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["ID", "Service", "Tags", "Meta", "Port", "x"]), inner,
                      max_size=3),
    max_leaves=8,
)
expressions = st.text() | st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions, extra_item=st.dictionaries(st.text(), json_values, max_size=4))
def test_any_input_fails_only_with_filter_error(expression: str,
                                                extra_item: dict[str, Any]) -> None:
    try:
        predicate = compile_filter(expression)
        for item in [*ITEMS, extra_item]:
            assert predicate(item) in (True, False)
    except FilterError as error:
        assert str(error)
        assert error.status == 500


# Round trip: build an expression tree, print it with arbitrary spacing and quoting, and
# compare the compiled filter with a direct reading of bexpr's semantics.

WORDS = ["", "a", "b", "ab", "db", "web", "primary", "é", "a b", 'say "x"', "tab\there",
         "back\\slash", "in", "not"]
words = st.sampled_from(WORDS)
PATTERNS = ["^a", "b$", "a.", "[ab]+", "^$", "é", "a|db", "(?i)DB"]
spaces = st.sampled_from([" ", "  ", "\t", "\n", " \n "])


def go_string(value: str, draw: Any) -> str:
    """A Go-escaped double-quoted literal; bexpr cannot contain a bare or escaped quote."""
    out = []
    for char in value:
        if char == '"':
            out.append(draw(st.sampled_from(["\\x22", "\\u0022", "\\042"])))
        elif char == "\\":
            out.append("\\\\")
        elif char in "\t\n":
            out.append({"\t": "\\t", "\n": "\\n"}[char])
        else:
            out.append(draw(st.sampled_from([char, f"\\u{ord(char):04x}"])))
    return '"' + "".join(out) + '"'


def literal(value: str, draw: Any) -> str:
    styles = ["double"]
    if "`" not in value:
        styles.append("raw")
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", value) and value not in ("in", "not"):
        styles.append("bare")
    style = draw(st.sampled_from(styles))
    if style == "raw":
        return f"`{value}`"
    return value if style == "bare" else go_string(value, draw)


@st.composite
def match_nodes(draw: Any) -> tuple[str, Any]:
    """(expression text, oracle) for one match on an agent service."""
    kind = draw(st.sampled_from(["string", "port", "bool", "tags", "meta", "meta_key"]))
    sp = draw(spaces)
    if kind == "string":
        field = draw(st.sampled_from(["ID", "Service", "Address"]))
        op: str = draw(st.sampled_from(["==", "!=", "in", "not in", "contains", "not contains",
                                   "matches", "not matches"]))
        if "matches" in op:
            pattern: str = draw(st.sampled_from(PATTERNS))

            def regex_oracle(item: dict[str, Any]) -> bool:
                return (re.search(pattern, item[field]) is not None) != op.startswith("not")

            return f"{field}{sp}{op}{sp}{literal(pattern, draw)}", regex_oracle
        value: str = draw(words)
        negated = op.startswith("not") or op == "!="
        test = (lambda item: item[field] == value) if "=" in op else (
            lambda item: value in item[field])
        if op in ("in", "not in"):
            text = f"{literal(value, draw)}{sp}{op}{sp}{field}"
        else:
            text = f"{field}{sp}{op}{sp}{literal(value, draw)}"
        return text, (lambda item: test(item) != negated)
    if kind == "port":
        port = draw(st.integers(0, 3))
        op = draw(st.sampled_from(["==", "!="]))
        rendered = draw(st.sampled_from([str(port), f'"{port}"', f'"0x{port:x}"']))
        return f"Port{sp}{op}{sp}{rendered}", lambda item: (item["Port"] == port) != (op == "!=")
    if kind == "bool":
        flag = draw(st.booleans())
        rendered = draw(st.sampled_from([str(flag).lower(), f'"{flag}"', "1" if flag else "0"]))
        return (f"EnableTagOverride == {rendered}",
                lambda item: item["EnableTagOverride"] is flag)
    if kind in ("tags", "meta"):
        field = "Tags" if kind == "tags" else "Meta"
        op = draw(st.sampled_from(["in", "not in", "contains", "not contains", "is empty",
                                   "is not empty"]))
        if "empty" in op:
            return (f"{field}{sp}{op}",
                    lambda item: (len(item[field]) == 0) != (op == "is not empty"))
        value = draw(words)
        text = (f"{literal(value, draw)}{sp}{op}{sp}{field}" if "in" in op.split()
                else f"{field}{sp}{op}{sp}{literal(value, draw)}")
        return text, lambda item: (value in item[field]) != op.startswith("not")
    key: str = draw(st.sampled_from(["k", "j", "odd-key"]))
    selector = f"Meta.{key}" if key.isalpha() and draw(st.booleans()) else (
        f"Meta[{go_string(key, draw)}]")
    op = draw(st.sampled_from(["==", "!=", "matches", "not matches"]))
    value = draw(words)
    positive = {"==": "==", "!=": "==", "matches": "matches", "not matches": "matches"}[op]

    def meta_oracle(item: dict[str, Any]) -> bool:
        meta: dict[str, str] = item["Meta"]
        if key not in meta:
            return op != "=="  # bexpr: only == (and in, is not empty) fail on a missing key
        hit = (meta[key] == value if positive == "==" else
               re.search(re.escape(value), meta[key]) is not None)
        return hit == (op == positive)

    operand = re.escape(value) if "matches" in op else value
    return f"{selector}{sp}{op}{sp}{literal(operand, draw)}", meta_oracle


@st.composite
def trees(draw: Any, depth: int = 0) -> tuple[str, Any, str]:
    """(text, oracle, precedence class) where class is 'atom', 'and' or 'or'."""
    shapes = ["match"] * 3 + ["not", "and", "or", "paren"] if depth < 3 else ["match"]
    shape = draw(st.sampled_from(shapes))
    if shape == "match":
        text, oracle = draw(match_nodes())
        return text, oracle, "atom"
    if shape == "not":
        text, oracle, level = draw(trees(depth + 1))
        inner = text if level == "atom" else f"({text})"
        return f"not {inner}", lambda item: not oracle(item), "atom"
    if shape == "paren":
        text, oracle, _ = draw(trees(depth + 1))
        return f"({draw(spaces)}{text}{draw(spaces)})", oracle, "atom"
    left, left_oracle, left_level = draw(trees(depth + 1))
    right, right_oracle, right_level = draw(trees(depth + 1))
    if shape == "and":
        left = left if left_level != "or" else f"({left})"
        right = right if right_level != "or" else f"({right})"
        return (f"{left}{draw(spaces)}and{draw(spaces)}{right}",
                lambda item: left_oracle(item) and right_oracle(item), "and")
    return (f"{left}{draw(spaces)}or{draw(spaces)}{right}",
            lambda item: left_oracle(item) or right_oracle(item), "or")


services = st.fixed_dictionaries({
    "ID": words, "Service": words, "Address": words, "Port": st.integers(0, 3),
    "EnableTagOverride": st.booleans(), "Tags": st.lists(words, max_size=3),
    "Meta": st.dictionaries(st.sampled_from(["k", "j", "odd-key"]), words, max_size=3),
    "Weights": st.just({"Passing": 1, "Warning": 1}),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), items=st.lists(services, min_size=1, max_size=4))
def test_printed_expressions_mean_what_bexpr_means(tree: tuple[str, Any, str],
                                                   items: list[dict[str, Any]]) -> None:
    text, oracle, _ = tree
    predicate = compile_filter(text, schema=AGENT_SERVICE)
    for item in items:
        assert predicate(item) is oracle(item), (text, item)
