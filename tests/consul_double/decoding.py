"""Request bodies decoded the way Go's encoding/json decodes them into Consul's structs.

consul-semantics.md §0 "Request JSON decoding":
* Field names match exactly, else case-insensitively (Go encoding/json).
* Strict schemas (service and check registration, check update) refuse an
  unknown field with `json: unknown field "X"`; lenient ones (session create)
  ignore it.
* Snake_case spellings Consul accepts are extra fields of the schema
  (`enable_tag_override`, `tagged_addresses`, `script_args`, ...).
* Durations take a Go duration string or a number of nanoseconds.
* JSON null leaves a scalar at its current value and sets a list or map to nil.
A mismatch raises DecodeError whose text is Go's; the endpoint prefixes
`Request decode failed: ` and answers 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .durations import GoSyntaxError, parse_duration


class DecodeError(ValueError):
    """str(error) is the error text Go's decoder would give."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # see _DECODERS
    schema: Schema | None = None


@dataclass(frozen=True)
class Schema:
    go_type: str
    fields: tuple[Field, ...]
    strict: bool = True

    def field_for(self, key: str) -> Field | None:
        for candidate in self.fields:
            if candidate.name == key:
                return candidate
        folded = key.lower()
        for candidate in self.fields:
            if candidate.name.lower() == folded:
                return candidate
        return None


_GO_TYPES = {
    "string": "string",
    "bool": "bool",
    "int": "int",
    "strings": "[]string",
    "string_map": "map[string]string",
    "headers": "map[string][]string",
    "duration": "time.Duration",
    "lock_delay": "time.Duration",
}


def parse_body(body: bytes) -> Any:
    """The first JSON value of the body, as Go's json.Decoder reads it."""
    text = body.decode("utf-8", "replace").lstrip()
    if not text:
        raise DecodeError("EOF")
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as error:
        if error.pos >= len(text):
            raise DecodeError("unexpected EOF") from None
        character = text[error.pos]
        raise DecodeError(
            f"invalid character '{character}' looking for beginning of value"
        ) from None
    return value


def decode(body: bytes, schema: Schema) -> dict[str, Any]:
    """Decode a request body into {field name: value} for the fields it set."""
    return decode_object(parse_body(body), schema)


def decode_object(value: Any, schema: Schema) -> dict[str, Any]:
    if value is None:
        return {}  # Go: null into a struct is a no-op
    if not isinstance(value, dict):
        raise DecodeError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type {schema.go_type}"
        )
    decoded: dict[str, Any] = {}
    for key, raw in value.items():
        target = schema.field_for(key)
        if target is None:
            if schema.strict:
                raise DecodeError(f"json: unknown field {json.dumps(key)}")
            continue
        if raw is None:
            if target.kind in _NULLABLE:
                decoded[target.name] = None
            continue
        decoded[target.name] = _decode_value(raw, target, schema)
    return decoded


_NULLABLE = frozenset({"strings", "string_map", "headers", "object", "objects", "address_map",
                       "any"})


def _decode_value(raw: Any, target: Field, schema: Schema) -> Any:
    kind = target.kind
    if kind == "any":
        return raw
    if kind in ("duration", "lock_delay"):
        return _decode_duration(raw, kind)
    if kind in ("object", "objects", "address_map"):
        return _decode_nested(raw, target, schema)
    expected = _SCALAR_CHECKS[kind]
    if not expected(raw):
        raise _type_error(raw, target, schema)
    return raw


def _decode_nested(raw: Any, target: Field, schema: Schema) -> Any:
    nested = target.schema
    assert nested is not None, f"{target.name} needs a nested schema"
    if target.kind == "object":
        if not isinstance(raw, dict):
            raise _type_error(raw, target, schema)
        return decode_object(raw, nested)
    if target.kind == "objects":
        if not isinstance(raw, list):
            raise _type_error(raw, target, schema)
        return [None if item is None else decode_object(item, nested) for item in raw]
    if not isinstance(raw, dict):
        raise _type_error(raw, target, schema)
    return {key: decode_object(item, nested) for key, item in raw.items()}


def _decode_duration(raw: Any, kind: str) -> int:
    """`interface{}` duration fields: a Go duration string, or a number of nanoseconds."""
    if isinstance(raw, str):
        try:
            nanoseconds = parse_duration(raw)
        except GoSyntaxError as error:
            raise DecodeError(str(error)) from None
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        nanoseconds = int(raw)
    else:
        nanoseconds = 0  # Go's type switch has no case for it: the zero value
    if kind == "lock_delay" and nanoseconds < 1000:
        # Session.UnmarshalJSON: "Convert low value integers into seconds" (§1.1)
        nanoseconds *= 1_000_000_000
    return nanoseconds


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def _is_string_list(raw: Any) -> bool:
    return isinstance(raw, list) and all(isinstance(item, str) for item in raw)


def _is_string_map(raw: Any) -> bool:
    return isinstance(raw, dict) and all(isinstance(item, str) for item in raw.values())


def _is_headers(raw: Any) -> bool:
    return isinstance(raw, dict) and all(
        item is None or _is_string_list(item) for item in raw.values()
    )


_SCALAR_CHECKS: dict[str, Any] = {
    "string": lambda raw: isinstance(raw, str),
    "bool": lambda raw: isinstance(raw, bool),
    "int": _is_int,
    "strings": _is_string_list,
    "string_map": _is_string_map,
    "headers": _is_headers,
}


def _type_error(raw: Any, target: Field, schema: Schema) -> DecodeError:
    go_type = _GO_TYPES.get(target.kind) or (target.schema.go_type if target.schema else "")
    if target.kind == "objects":
        go_type = f"[]{go_type}"
    return DecodeError(
        f"json: cannot unmarshal {_json_kind(raw)} into Go struct field "
        f"{schema.go_type.rsplit('.', 1)[-1]}.{target.name} of type {go_type}"
    )


def _json_kind(raw: Any) -> str:
    if isinstance(raw, bool):
        return "bool"
    if isinstance(raw, int | float):
        return "number"
    if isinstance(raw, str):
        return "string"
    if isinstance(raw, list):
        return "array"
    if isinstance(raw, dict):
        return "object"
    return "null"


def _fields(spec: str) -> tuple[Field, ...]:
    """`"Name:kind Other:kind"` → Fields; keeps the schemas below readable."""
    fields = []
    for item in spec.split():
        name, kind = item.split(":")
        fields.append(Field(name, kind))
    return tuple(fields)


WEIGHTS = Schema("structs.Weights", _fields("Passing:int Warning:int"))
SERVICE_ADDRESS = Schema("structs.ServiceAddress", _fields("Address:string Port:int"))
SERVICE_CHECK_REF = Schema("structs.ServiceCheck", _fields("ID:string Namespace:string"),
                           strict=False)

# The fields CheckType and CheckDefinition share (check_type.go, check_definition.go).
_COMMON_CHECK_FIELDS = (
    "ScriptArgs:strings HTTP:string H2PING:string H2PingUseTLS:bool Header:headers "
    "Method:string Body:string DisableRedirects:bool TCP:string UDP:string "
    "Interval:duration AliasNode:string AliasService:string DockerContainerID:string "
    "Shell:string GRPC:string GRPCUseTLS:bool OSService:string TLSServerName:string "
    "TLSSkipVerify:bool Timeout:duration TTL:duration SuccessBeforePassing:int "
    "FailuresBeforeWarning:int FailuresBeforeCritical:int "
    "DeregisterCriticalServiceAfter:duration OutputMaxSize:int "
    "args:strings script_args:strings deregister_critical_service_after:duration "
    "docker_container_id:string tls_server_name:string tls_skip_verify:bool "
    "grpc_use_tls:bool h2ping_use_tls:bool"
)

# structs.CheckType: a check inside a service registration (§4.3).
CHECK_TYPE = Schema(
    "structs.CheckType",
    _fields(
        "CheckID:string Name:string Status:string Notes:string ProxyHTTP:string "
        "ProxyGRPC:string ServiceID:string service_id:string " + _COMMON_CHECK_FIELDS
    ),
)

# structs.CheckDefinition: the body of PUT /v1/agent/check/register (§4.6).
CHECK_DEFINITION = Schema(
    "structs.CheckDefinition",
    _fields(
        "ID:string Name:string Notes:string ServiceID:string Token:string Status:string "
        "service_id:string disable_redirects:bool " + _COMMON_CHECK_FIELDS
    ),
)

# structs.ServiceDefinition: the body of PUT /v1/agent/service/register (§4.3).
SERVICE_DEFINITION = Schema(
    "structs.ServiceDefinition",
    (
        *_fields("Kind:string ID:string Name:string Tags:strings Address:string"),
        Field("TaggedAddresses", "address_map", SERVICE_ADDRESS),
        *_fields("Meta:string_map Port:int SocketPath:string"),
        Field("Check", "object", CHECK_TYPE),
        Field("Checks", "objects", CHECK_TYPE),
        Field("Weights", "object", WEIGHTS),
        *_fields("Token:string EnableTagOverride:bool Locality:any Proxy:any Connect:any"),
        Field("enable_tag_override", "bool"),
        Field("tagged_addresses", "address_map", SERVICE_ADDRESS),
    ),
)

# checkUpdate: the body of PUT /v1/agent/check/update/:id (§4.6).
CHECK_UPDATE = Schema("agent.checkUpdate", _fields("Status:string Output:string"))

# structs.Session through Session.UnmarshalJSON: plain json.Unmarshal, so lenient (§1.1).
SESSION = Schema(
    "structs.Session",
    (
        *_fields("ID:string Name:string Node:string LockDelay:lock_delay Behavior:string"),
        *_fields("TTL:string NodeChecks:strings"),
        Field("ServiceChecks", "objects", SERVICE_CHECK_REF),
        *_fields("Checks:strings CreateIndex:int ModifyIndex:int"),
    ),
    strict=False,
)

# structs.DeregisterRequest: the body of PUT /v1/catalog/deregister. The HTTP handler decodes
# it with decodeBody (plain json.Decoder), so lenient like the session (addendum §14).
CATALOG_DEREGISTER = Schema(
    "structs.DeregisterRequest",
    _fields("Datacenter:string Node:string ServiceID:string CheckID:string Token:string"),
    strict=False,
)
