"""Listening ports for the processes tests start (sidecars, Nomad tasks, Prometheus).

A leaf module: the harness and the Nomad model both hand out ports from here, so neither
imports the other for it.
"""

from __future__ import annotations

import random
import socket
import threading

_LISTEN_PORTS = range(20000, 32000)  # below Linux's ephemeral range (32768-60999)
_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A port for a process to listen on later. Port 0 would come from the ephemeral range,
    where any outgoing connection may take it before the process binds it; so pick one
    below it, check it is free now, and never hand it out twice in this process."""
    with _port_lock:
        start = random.randrange(len(_LISTEN_PORTS))
        for offset in range(len(_LISTEN_PORTS)):
            port = _LISTEN_PORTS[(start + offset) % len(_LISTEN_PORTS)]
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free listening port left")
