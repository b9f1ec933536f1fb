"""Check definitions in registration bodies: snake_case translation, validation, type.

The rules of Consul's CheckType / CheckDefinition (consul-semantics.md §4.3,
§4.6): `UnmarshalJSON`'s snake_case translations, `Validate()` message for
message, `Type()` in its order of precedence, and `Empty()`.
"""

from __future__ import annotations

from typing import Any

from ..catalog import CheckSpec
from ..durations import format_duration


def translated_check_fields(decoded: dict[str, Any]) -> dict[str, Any]:
    """The snake_case translations of CheckType/CheckDefinition.UnmarshalJSON."""
    fields = dict(decoded)
    if not fields.get("ScriptArgs"):
        fields["ScriptArgs"] = fields.get("args") or fields.get("script_args") or []
    if "DeregisterCriticalServiceAfter" not in fields:
        fields["DeregisterCriticalServiceAfter"] = fields.get(
            "deregister_critical_service_after", 0)
    for camel, snake in (("DockerContainerID", "docker_container_id"),
                         ("TLSServerName", "tls_server_name"),
                         ("TLSSkipVerify", "tls_skip_verify"),
                         ("GRPCUseTLS", "grpc_use_tls"),
                         ("DisableRedirects", "disable_redirects")):
        if not fields.get(camel) and fields.get(snake):
            fields[camel] = fields[snake]
    # Only CheckDefinition uses it; inside a service registration it is ignored.
    fields["ServiceID"] = fields.get("ServiceID") or fields.get("service_id") or ""
    return fields


def check_type_problem(fields: dict[str, Any]) -> str | None:
    """CheckType.Validate, message for message."""
    interval_check = bool(fields.get("ScriptArgs")) or any(
        fields.get(name) for name in ("HTTP", "TCP", "UDP", "GRPC", "H2PING", "OSService")
    )
    alias = bool(fields.get("AliasNode") or fields.get("AliasService"))
    interval = fields.get("Interval") or 0
    ttl = fields.get("TTL") or 0
    if interval > 0 and ttl > 0:
        return "Interval and TTL cannot both be specified"
    if interval_check and interval <= 0:
        return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
    if interval_check and alias:
        return "Interval cannot be set for Alias checks"
    if alias and ttl > 0:
        return "TTL must be not be set for Alias checks"
    if not interval_check and not alias and ttl <= 0:
        return "TTL must be > 0 for TTL checks"
    if (fields.get("OutputMaxSize") or 0) < 0:
        return "MaxOutputMaxSize must be positive"
    if (fields.get("FailuresBeforeWarning") or 0) > (fields.get("FailuresBeforeCritical") or 0):
        return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
    return None


def check_type_name(fields: dict[str, Any]) -> str:
    """CheckType.Type(), in its order of precedence."""
    interval = (fields.get("Interval") or 0) > 0
    script = bool(fields.get("ScriptArgs"))
    kinds = (
        ("grpc", bool(fields.get("GRPC")) and interval),
        ("http", bool(fields.get("HTTP")) and interval),
        ("ttl", (fields.get("TTL") or 0) > 0),
        ("tcp", bool(fields.get("TCP")) and interval),
        ("udp", bool(fields.get("UDP")) and interval),
        ("alias", bool(fields.get("AliasNode") or fields.get("AliasService"))),
        ("docker", script and bool(fields.get("DockerContainerID")) and interval),
        ("script", script),
        ("h2ping", bool(fields.get("H2PING")) and interval),
        ("os_service", bool(fields.get("OSService")) and interval),
    )
    return next((name for name, matches in kinds if matches), "")


def check_spec(fields: dict[str, Any], check_id: str, name: str, service_id: str) -> CheckSpec:
    interval = fields.get("Interval") or 0
    timeout = fields.get("Timeout") or 0
    return CheckSpec(
        check_id=check_id,
        name=name,
        status=fields.get("Status") or "",
        notes=fields.get("Notes") or "",
        service_id=service_id,
        type=check_type_name(fields),
        ttl_ns=fields.get("TTL") or 0,
        interval=format_duration(interval) if interval else "",
        timeout=format_duration(timeout) if timeout else "",
        alias_service=fields.get("AliasService") or "",
        alias_node=fields.get("AliasNode") or "",
    )


def is_empty_check(fields: dict[str, Any]) -> bool:
    """CheckType.Empty(): every field at its zero value."""
    return not any(value for value in fields.values())
