"""A sidecar that ignores SIGTERM: `python tests/chaos/deaf.py COMMAND...` runs COMMAND as a
child in its process group and ignores SIGTERM itself, passing nothing on, like an
entrypoint shell that does not forward signals. Nomad's SIGTERM reaches only this process;
the sidecar goes when Nomad SIGKILLs the task's process group at kill_timeout.

Exits with the child's status when the child ends on its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(command: list[str]) -> int:
    if not command:
        print("usage: deaf.py COMMAND...", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The child would inherit SIG_IGN; give it the default so it behaves as it always does
    # (it is never sent SIGTERM anyway: nobody but Nomad signals, and Nomad signals us).
    child = subprocess.Popen(command, preexec_fn=_default_sigterm)
    return child.wait()


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
