"""The product as an operator starts it (scripts/run.sh), and a foreign Python to start it next to.

scripts/run.sh binds the demo's fixed addresses (127.0.0.1:5060, the stand-ins on 127.0.0.2-7:5060):
tests that use it belong in a private network namespace, e.g.
    unshare -n sh -c 'ip link set lo up && ./scripts/test.sh -q tests/sip/test_startup.py'
and skip when something else holds those addresses.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest

from tests.harness import ROOT, bound, free_port, office_file

DEMO = ROOT / "redis-schema" / "demo-office.yaml"
_demo = office_file(DEMO)
# The stand-ins run.sh starts: every trunk and media server of the demo (all on loopback).
DEMO_PEERS = {peer["name"]: (peer["host"], peer.get("port", 5060))
              for peer in (_demo.get("trunks") or []) + (_demo.get("media_servers") or [])}
PROXY = ("127.0.0.1", 5060)  # scripts/env.sh's SIP_ADDR and SIP_PORT


def demo_addresses_free() -> None:
    """Skip unless the addresses run.sh binds are free (they are in a private network namespace)."""
    taken = [f"{ip}:{port}" for ip, port in [PROXY, *DEMO_PEERS.values()]
             if bound(ip, port) or bound(ip, port, tcp=True)]
    if taken:
        pytest.skip(f"{', '.join(taken)} in use: run these tests in a private network namespace "
                    f"(unshare -n sh -c 'ip link set lo up && ./scripts/test.sh ...')")


def env_sh_names() -> set[str]:
    """The variables scripts/env.sh sets: scripts/test.sh exported them to this process, and run.sh
    must compute its own (RUN_DIR, KAMAILIO_CTL, ...) as on an operator's machine."""
    text = (ROOT / "scripts" / "env.sh").read_text(encoding="utf-8")
    return set(re.findall(r"^\s*(?:export\s+)?([A-Z0-9_]+)=", text, re.M))


class RunSh:
    """scripts/run.sh in its own process group, its output (stdout and stderr) collected."""

    def __init__(self, workdir: Path, **env: str):
        self.workdir = workdir
        self.run_dir = workdir / f"run-{os.getpid()}-{time.monotonic_ns()}"
        self.redis_port = free_port(kind=socket.SOCK_STREAM)
        base = {k: v for k, v in os.environ.items() if k not in env_sh_names() and k != "REDIS_URL"}
        venv = sys.prefix if sys.prefix != sys.base_prefix else str(ROOT / ".venv")
        self.env = {**base, "RUN_DIR": str(self.run_dir), "REDIS_PORT": str(self.redis_port),
                    "KEMI_VENV": venv, **env}
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self) -> "RunSh":
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "run.sh")], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", start_new_session=True)
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        """True once `text` is in the output; False if run.sh exited or the time ran out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader's last lines
                return text in self.output
            time.sleep(0.1)
        return False

    def up(self, timeout: float = 60) -> "RunSh":
        assert self.wait_for("run: proxy on ", timeout), f"run.sh did not come up:\n{self.output[-4000:]}"
        return self

    def finish(self, timeout: float = 60) -> int:
        """run.sh's exit status, waiting for it to exit by itself."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run.sh still running after {timeout}s:\n{self.output[-4000:]}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as Ctrl-C or a service manager would: run.sh's exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def group_gone(self, timeout: float = 10) -> bool:
        """Whether every process run.sh started has exited (they share its process group)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """Whatever happened, nothing of this run survives the test."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def foreign_python(root: Path) -> Path:
    """A Python installation that is not Debian's, of the same version as the one Kamailio embeds,
    as pyenv or conda install it: its own lib/python3.X, whose _ssl does not load into Debian's
    libpython. Built from Debian's standard library (symlinks) without _ssl, so that it fails as a
    pyenv 3.11 did: `ssl` cannot be imported and redis dies with AttributeError 'VerifyMode'.
    Returns its bin directory; its python3 is never run (Kamailio only looks it up on PATH)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_path("stdlib"))  # Debian's, of the interpreter this venv was made by
    lib = root / "lib" / version
    (lib / "lib-dynload").mkdir(parents=True, exist_ok=True)
    for entry in stdlib.iterdir():
        if entry.name != "lib-dynload" and not (lib / entry.name).exists():
            (lib / entry.name).symlink_to(entry)
    for entry in (stdlib / "lib-dynload").iterdir():
        if not entry.name.startswith("_ssl") and not (lib / "lib-dynload" / entry.name).exists():
            (lib / "lib-dynload" / entry.name).symlink_to(entry)
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "python3"
    exe.write_text("#!/bin/sh\necho 'a foreign python3' >&2\nexit 1\n")
    exe.chmod(0o755)
    return bin_dir
