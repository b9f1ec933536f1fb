"""The `consul-leader` command.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a configuration error (one line
per problem, naming the variable, before any request to Consul). Transient Consul faults
never end the process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from importlib import metadata
from types import FrameType

from consul_leader.adapters import logs
from consul_leader.adapters.config import VARIABLES, Config, ConfigError, load_config

EXIT_OK = 0
EXIT_CONFIG = 2


def version() -> str:
    try:
        return metadata.version("consul-leader")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def usage() -> str:
    width = max(len(v.name) for v in VARIABLES)
    lines = [
        "usage: consul-leader [--help] [--version]",
        "",
        "Leader-election sidecar for services on Consul and Nomad. Configured only by",
        "environment variables:",
        "",
    ]
    for variable in VARIABLES:
        default = variable.default_text or "(empty)"
        lines.append(f"  {variable.name:<{width}}  default {default}")
        lines.append(f"  {'':<{width}}  {variable.meaning}")
    lines += ["", "Exit status: 0 after SIGTERM/SIGINT, 2 on a configuration error."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage())
        return EXIT_OK
    if "--version" in args:
        print(f"consul-leader {version()}")
        return EXIT_OK
    if args:
        print(f"consul-leader: unexpected argument {args[0]!r} (configuration is by environment"
              " variables; see --help)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = load_config(os.environ if environ is None else environ)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"consul-leader: configuration error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    return run(config)


def run(config: Config) -> int:
    from consul_leader.adapters.sidecar import (
        Sidecar,  # imported late: --help and config errors stay cheap
    )

    logs.configure(config.log_level, config.log_format, _log_context(config))
    sidecar = Sidecar(config, version())
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sidecar.start()
    # Wake up regularly: signal handlers only run between bytecodes of the main thread.
    while not stop_requested.wait(0.2):
        if sidecar.machine_stopped():
            break
    sidecar.shutdown()
    fatal = sidecar.fatal
    if fatal is not None:
        print(f"consul-leader: configuration error: {fatal}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _log_context(config: Config) -> dict[str, str]:
    context = {"service": config.service_name, "key": config.key}
    if config.alloc_id:
        context["alloc_id"] = config.alloc_id
    return context


if __name__ == "__main__":
    sys.exit(main())
