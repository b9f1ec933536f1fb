"""Build the project's image with podman on a Debian base bootstrapped on this machine.

No container registry is reachable here, so the base is made from Debian's packages with
mmdebstrap and imported into podman; the Dockerfile takes it through its BASE_IMAGE build
argument (the default stays the official Python image). Everything podman keeps (its
settings, images, containers) lives under one state folder, so a run shares nothing with
another podman user of the machine.

    python -m scripts.image --state out/image     # or: make image

prints each step with its duration and the tag it built; then, for example,

    export CONTAINERS_CONF=out/image/containers.conf
    export CONTAINERS_STORAGE_CONF=out/image/storage.conf
    podman run --rm --network=host localhost/consul-leader:0.1.0 --version

Settings these machines need: runc as the runtime with cgroupfs (Debian 12's crun refuses to
start containers on a hybrid cgroup layout), the file events logger, open-file and process
limits no higher than this process's own (podman's defaults ask for more, and setrlimit
fails), `--format docker` (the OCI format drops HEALTHCHECK), `--pull=never`,
`--layers=false` (buildah 1.28 can fail a cached rebuild of a `RUN --mount ... from=` step),
and the host's CA bundle mounted read-only into the build so pip trusts what the host trusts.
Needs root and Debian's `podman`, `mmdebstrap` and `runc` (`.ci/run` installs them).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import consul_leader
from consul_leader.adapters.cli import revision

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3",
                 "ca-certificates")
BASE_TAG = f"localhost/consul-leader-base:{SUITE}"
IMAGE_NAME = "localhost/consul-leader"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("podman", "mmdebstrap", "runc")
BOOTSTRAP_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 600


class ImageError(RuntimeError):
    """A step failed; the message is one line, the full output is in the state folder."""


def _soft_limit(which: int, wanted: int) -> int:
    soft, _hard = resource.getrlimit(which)
    return wanted if soft == resource.RLIM_INFINITY else min(wanted, soft)


def _containers_conf() -> str:
    # A container may not raise a limit above its parent's; 4096 is plenty for the sidecar.
    nofile = _soft_limit(resource.RLIMIT_NOFILE, 4096)
    nproc = _soft_limit(resource.RLIMIT_NPROC, 4096)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


@dataclass(frozen=True)
class Podman:
    """podman with its own configuration and storage under `state`."""

    state: Path

    @classmethod
    def isolated(cls, state: Path) -> Podman:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise ImageError(f"{', '.join(missing)} not found: apt-get install podman mmdebstrap"
                             " runc (bash .ci/run does)")
        state = state.resolve()
        (state / "logs").mkdir(parents=True, exist_ok=True)
        (state / "containers.conf").write_text(
            _containers_conf() + f'tmp_dir = "{state / "tmp"}"\n', encoding="utf-8")
        (state / "storage.conf").write_text(
            '[storage]\ndriver = "overlay"\n'
            f'graphroot = "{state / "storage"}"\nrunroot = "{state / "run"}"\n',
            encoding="utf-8")
        return cls(state)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.state / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.state / "storage.conf")}

    def __call__(self, *args: str, timeout: float = 60,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS`; with check, a non-zero exit raises ImageError (one line)."""
        return self._run(["podman", *args], f"podman-{args[0]}", timeout, check)

    def _run(self, command: list[str], step: str, timeout: float,
             check: bool) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                    timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ImageError(f"{' '.join(command[:2])} did not finish within {timeout:.0f} s")\
                from None
        if check and result.returncode != 0:
            log = self.state / "logs" / f"{step}.log"
            log.write_text(f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}",
                           encoding="utf-8")
            last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
            raise ImageError(f"{' '.join(command[:2])} exited {result.returncode}: {last[-1]}"
                             f" (full output: {log})")
        return result

    def bootstrap_base(self, tag: str = BASE_TAG) -> None:
        """A minimal Debian with its Python, imported as `tag` (what BASE_IMAGE expects)."""
        rootfs = self.state / "rootfs.tar"
        hooks = [
            # The Dockerfile installs into the system Python, as in the official image.
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            # The host's apt sources and package lists stay out of the image.
            '--customize-hook=rm -rf "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*'
            ' "$1"/var/lib/apt/lists/*',
        ]
        command = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                   *hooks, SUITE, str(rootfs), *_host_apt_sources()]
        self._run(command, "mmdebstrap", BOOTSTRAP_TIMEOUT_S, check=True)
        try:
            self("import", "--change", 'CMD ["python3"]', str(rootfs), tag, timeout=300)
        finally:
            rootfs.unlink(missing_ok=True)

    def build(self, tag: str, *, base: str, version: str, build_revision: str) -> None:
        self("build", "--format", "docker", "--pull=never", "--layers=false",
             "--network=host", "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
             "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={version}",
             "--build-arg", f"REVISION={build_revision}",
             "--tag", tag, "--file", str(REPO / "Dockerfile"), str(REPO),
             timeout=BUILD_TIMEOUT_S)

    def clean(self) -> None:
        """Remove every container and image, then the state folder."""
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("rmi", "--all", "--force", check=False)
        shutil.rmtree(self.state, ignore_errors=True)


def _host_apt_sources() -> list[str]:
    """The machine's apt sources (a mirror argument each), or none: mmdebstrap's default."""
    sources = [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    return [str(path) for path in sources if path.is_file() and path.stat().st_size > 0]


def timed(what: str, step: Callable[[], None], report: Callable[[str], None] = print) -> float:
    started = time.monotonic()
    step()
    seconds = time.monotonic() - started
    report(f"image: {what} took {seconds:.1f} s")
    return seconds


def build_image(podman: Podman, report: Callable[[str], None] = print) -> tuple[str, str]:
    """Bootstrap the base and build the image; returns (tag, revision it was built with)."""
    version = consul_leader.__version__
    build_revision = revision()
    tag = f"{IMAGE_NAME}:{version}"
    timed(f"bootstrapping the {SUITE} base", podman.bootstrap_base, report)
    timed(f"building {tag}", lambda: podman.build(tag, base=BASE_TAG, version=version,
                                                   build_revision=build_revision), report)
    return tag, build_revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=REPO / "out" / "image",
                        help="folder for podman's settings and storage (default out/image)")
    arguments = parser.parse_args(argv)
    try:
        podman = Podman.isolated(arguments.state)
        tag, _ = build_image(podman)
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    print(f"image: built {tag}; CONTAINERS_CONF={podman.state / 'containers.conf'} "
          f"CONTAINERS_STORAGE_CONF={podman.state / 'storage.conf'} podman images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
