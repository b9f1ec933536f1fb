"""The `consul-leader` command.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a configuration error (one line
per problem, naming the variable, before any request to Consul; a listen address that cannot
be bound is one). Transient Consul faults never end the process. ``--help`` and ``--version``
exit 0, without a traceback even when the reader closes the pipe early (``| head -1``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import consul_leader
from consul_leader.adapters.config import (
    VARIABLES,
    Config,
    ConfigError,
    listen_text,
    load_config,
)
from consul_leader.adapters.observability import logs

if TYPE_CHECKING:
    from consul_leader.adapters.observability.status_server import ListenError

EXIT_OK = 0
EXIT_CONFIG = 2
HELP_WIDTH = 80  # terminals and `man`-style readers; the issue measured ~150 before


REVISION_VARIABLE = "CONSUL_LEADER_REVISION"  # set by the image from its REVISION build arg
UNKNOWN_REVISION = "unknown"


def version() -> str:
    """The one version, ``consul_leader.__version__`` (pyproject.toml reads the same)."""
    return consul_leader.__version__


def revision(environ: Mapping[str, str] | None = None) -> str:
    """The source revision this sidecar was built from, for ``consul_leader_build_info``.

    In order: ``CONSUL_LEADER_REVISION`` (the image sets it from its ``REVISION`` build
    argument), else the commit checked out when running from a git checkout of the project,
    else ``unknown`` (an installed wheel: it records no revision).
    """
    value = (os.environ if environ is None else environ).get(REVISION_VARIABLE, "").strip()
    return value or _checkout_revision() or UNKNOWN_REVISION


def _checkout_revision() -> str | None:
    # The package's parent is the repository root in a checkout, site-packages when installed;
    # only a root with its own .git (a folder, or a file in a worktree) asks git.
    root = Path(consul_leader.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def usage() -> str:
    """The --help text, every line at most HELP_WIDTH columns."""
    lines = ["usage: consul-leader [--help] [--version]",
             "       consul-leader switchover [--to INSTANCE] [--hold-off 5s]",
             "                                [--addr HOST:PORT] [--token-file FILE]", ""]
    lines += _wrapped("Leader-election sidecar for services on Consul and Nomad. Configured "
                      "only by environment variables:", "")
    for variable in VARIABLES:
        lines += ["", f"  {variable.name}"]
        lines += _wrapped(variable.meaning, "      ")
        lines += _wrapped(f"Default: {variable.default_text or '(empty)'}", "      ")
    lines += [""]
    lines += _wrapped("Exit status: 0 after SIGTERM/SIGINT, 2 on a configuration error "
                      "(including a listen address that cannot be bound).", "")
    return "\n".join(lines)


def _wrapped(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, HELP_WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "switchover":
        from consul_leader.adapters import switchover_cli

        return switchover_cli.main(args[1:], os.environ if environ is None else environ)
    if any(a in ("-h", "--help") for a in args):
        return _print_and_exit(usage())
    if "--version" in args:
        return _print_and_exit(f"consul-leader {version()} (revision {revision()})")
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


def _print_and_exit(text: str) -> int:
    """Print to stdout; a reader that went away (``| head -1``) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_OK


def run(config: Config) -> int:
    # Imported late: --help and configuration errors stay cheap.
    from consul_leader.adapters.observability.status_server import ListenError
    from consul_leader.adapters.sidecar import Sidecar

    logs.configure(config.log_level, config.log_format, _log_context(config))
    try:
        # Binds the listen address first, nothing else.
        sidecar = Sidecar(config, version(), revision())
    except ListenError as exc:
        print(f"consul-leader: configuration error: {_listen_problem(config, exc)}",
              file=sys.stderr)
        return EXIT_CONFIG
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


def _listen_problem(config: Config, exc: ListenError) -> str:
    assert config.listen is not None  # only a configured listener can fail to bind
    hint = ""
    if exc.address_in_use:
        hint = " (give each sidecar on a host its own port, or set it to off)"
    return f'CONSUL_LEADER_LISTEN="{listen_text(config.listen)}": {exc}{hint}'


def _log_context(config: Config) -> dict[str, str]:
    context = {"service": config.service_name, "key": config.key}
    if config.alloc_id:
        context["alloc_id"] = config.alloc_id
    return context


if __name__ == "__main__":
    sys.exit(main())
