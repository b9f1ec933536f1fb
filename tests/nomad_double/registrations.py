"""What Nomad sends to Consul for the services of one workload (a task or a group).

nomad: command/agent/consul/service_client.go (serviceRegs, checkRegs, createCheckReg,
apiCheckRegistrationToCheck, parseTaggedAddresses, newWeights),
client/serviceregistration/workload.go (WorkloadServices). Bodies are the JSON the Go
client marshals (`omitempty` fields left out), so the stand-in decodes them strictly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.consul_double.durations import SECOND, format_duration

from . import ids
from .jobspec import Check, Service

TTL_CHECK_BUFFER = 31.0  # nomad: service_client.go (ttlCheckBuffer)

Registration = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """serviceregistration.WorkloadServices: one task's (or one group's) services."""

    alloc_id: str
    job_id: str
    group: str
    task: str | None
    namespace: str
    services: tuple[Service, ...]
    host_address: str
    ports: Mapping[str, int]
    canary: bool = False
    tokens: Mapping[str, str] = field(default_factory=dict)  # service name -> token

    @property
    def name(self) -> str:
        return ids.workload_name(self.group, self.task)

    def service_id(self, service: Service) -> str:
        return ids.alloc_service_id(self.alloc_id, self.name, service.name, service.port_label)


@dataclass
class Operations:
    """nomad: service_client.go (operations): what one commit asks the sync loop to do."""

    reg_services: list[Registration] = field(default_factory=list)
    reg_checks: list[Registration] = field(default_factory=list)
    dereg_services: list[str] = field(default_factory=list)
    dereg_checks: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.reg_services or self.reg_checks or self.dereg_services
                    or self.dereg_checks)


def service_registration(workload: Workload, service: Service, ttl_buffer: float
                         ) -> tuple[Registration, list[Registration]]:
    """The service body and its check registrations (nomad: serviceRegs)."""
    service_id = workload.service_id(service)
    port = _port(workload, service)
    body: Registration = {}
    if service.kind:
        body["Kind"] = service.kind
    body["ID"] = service_id
    body["Name"] = service.name
    tags = _tags(workload, service)
    if tags:
        body["Tags"] = tags
    body["Port"] = port
    body["Address"] = service.address or workload.host_address
    tagged = parse_tagged_addresses(service.tagged_addresses, port)
    if tagged:
        body["TaggedAddresses"] = tagged
    if service.enable_tag_override:
        body["EnableTagOverride"] = True
    body["Meta"] = _meta(workload, service)
    if service.weights is not None:
        # nomad: service_client.go (newWeights)
        body["Weights"] = {"Passing": service.weights[0], "Warning": service.weights[1]}
    checks = [check_registration(service_id, check, ttl_buffer) for check in service.checks]
    body["Check"] = None
    body["Checks"] = [service_check(check) for check in checks]
    return body, checks


def check_registration(service_id: str, check: Check, ttl_buffer: float) -> Registration:
    """nomad: service_client.go (createCheckReg). A script check becomes a TTL check of
    interval + ttlCheckBuffer that Nomad heartbeats; Interval is dropped (Consul answers
    400 to TTL and Interval together). Notes are not sent, as in Nomad."""
    body: Registration = {
        "ID": ids.check_id(service_id, check),
        "Name": check.name,
        "ServiceID": service_id,
        "Timeout": _go_duration(check.timeout),
        "TTL": _go_duration(check.interval + ttl_buffer),
    }
    if check.initial_status:
        body["Status"] = check.initial_status
    _copy_thresholds(check, body)
    return body


def service_check(registration: Registration) -> Registration:
    # nomad: service_client.go (apiCheckRegistrationToCheck): the same check inside the
    # service body, so the first registration creates it with the service.
    body = {"CheckID": registration["ID"], "Name": registration["Name"]}
    for key in ("Timeout", "TTL", "Status", "SuccessBeforePassing",
                "FailuresBeforeCritical", "FailuresBeforeWarning"):
        if key in registration:
            body[key] = registration[key]
    return body


def parse_tagged_addresses(addresses: Mapping[str, str], port: int
                           ) -> dict[str, dict[str, Any]]:
    # nomad: service_client.go (parseTaggedAddresses, parseAddress)
    return {key: _parse_address(value, port) for key, value in addresses.items()}


def _parse_address(raw: str, port: int) -> dict[str, Any]:
    host, port_text = _split_host_port(raw)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not port_text:
            raise ValueError(f"error parsing address {raw!r}: not an IP address") from None
    return {"Address": host, "Port": int(port_text) if port_text else port}


def _split_host_port(raw: str) -> tuple[str, str]:
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        return host, rest.removeprefix(":")
    if raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        return host, port_text
    return raw, ""


def _port(workload: Workload, service: Service) -> int:
    try:
        return workload.ports[service.port_label]
    except KeyError:
        raise ValueError(
            f"unable to get address for service {service.name!r}: "
            f"invalid port {service.port_label!r}: port label not found"
        ) from None


def _tags(workload: Workload, service: Service) -> list[str]:
    # nomad: service_client.go (serviceRegs): canary_tags replace tags on a canary.
    if workload.canary and service.canary_tags:
        return list(service.canary_tags)
    return list(service.tags)


def _meta(workload: Workload, service: Service) -> dict[str, str]:
    # nomad: service_client.go (serviceRegs): canary_meta likewise; external-source always.
    meta = dict(service.canary_meta if workload.canary and service.canary_meta
                else service.meta)
    meta["external-source"] = "nomad"
    return meta


def _copy_thresholds(check: Check, body: Registration) -> None:
    for attribute, key in (("success_before_passing", "SuccessBeforePassing"),
                           ("failures_before_critical", "FailuresBeforeCritical"),
                           ("failures_before_warning", "FailuresBeforeWarning")):
        value = getattr(check, attribute)
        if value:
            body[key] = value


def _go_duration(seconds: float) -> str:
    return format_duration(round(seconds * SECOND))
