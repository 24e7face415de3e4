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

from tests.harness import ADMIN_PASSWORD, ROOT, bound, free_port, office_file

DEMO = ROOT / "redis-schema" / "demo-office.yaml"
_demo = office_file(DEMO)
# The stand-ins run.sh starts: every trunk and media server of the demo (all on loopback).
DEMO_PEERS = {peer["name"]: (peer["host"], peer.get("port", 5060))
              for peer in (_demo.get("trunks") or []) + (_demo.get("media_servers") or [])}
# of those, the media servers: run.sh starts the media server (media/) on them, SIPp stand-ins on the trunks
DEMO_MEDIA = {peer["name"]: (peer["host"], peer.get("port", 5060)) for peer in _demo.get("media_servers") or []}
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
        # run.sh's Redis has the product's ACL users; the tests speak to it as its admin user
        self.env = {**base, "RUN_DIR": str(self.run_dir), "REDIS_PORT": str(self.redis_port),
                    "KEMI_VENV": venv, "REDIS_ADMIN_PASSWORD": ADMIN_PASSWORD, **env}
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://cowork-admin:{ADMIN_PASSWORD}@127.0.0.1:{self.redis_port}/0"

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

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C in run.sh's terminal: SIGINT to its whole process group. run.sh's exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
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


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_tls_setup() -> tuple[str, str]:
    """(account line, baresip config line) of the README's SIP over TLS section."""
    section = readme_section("SIP over TLS")
    account = next(line for line in section.splitlines() if line.startswith("<sip:"))
    config = next(line for line in section.splitlines() if line.startswith("sip_cafile "))
    return account, config


def readme_accounts() -> dict[str, str]:
    """The baresip account lines of the README's First call section, by extension."""
    lines = [line for line in readme_section("First call").splitlines() if line.startswith("<sip:")]
    return {re.match(r"<sip:([^@]+)@", line).group(1): line for line in lines}


class Baresip:
    """baresip from Debian, as the README's First call section sets it up, without a terminal or a
    sound card: the account line is the README's; the microphone is a WAV file of `talk_s` seconds (at
    its end baresip hangs up, so a call lasts that long); the speaker is aubridge, which plays to
    nothing; the phone has its own loopback address. `-t` bounds its life whatever happens.
    config: more lines for its config file (e.g. the README's sip_cafile for TLS)."""

    LIFETIME_S = 120

    def __init__(self, workdir: Path, account: str, ip: str, talk_s: float, netns: str | None = None,
                 config: str = ""):
        import math
        import struct
        import wave
        self.dir = workdir / f"baresip-{ip}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        tone = self.dir / "talk.wav"
        with wave.open(str(tone), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i / 8000)))
                                     for i in range(int(8000 * talk_s))))
        # baresip 1.0 binds its RTP to no address in particular: on loopback its media leaves from
        # 127.0.0.1 (the kernel's source towards a loopback destination), so a phone on a loopback
        # address of its own would talk SIP from one address and RTP from another, which the media
        # lock (kemi.sip.media: a phone's audio only from its signalling address) rightly refuses. On a
        # real host both leave from its one address; here the phone signals from 127.0.0.1 too, at a
        # port of its own (15000 + twice the last byte of its address: baresip takes the next one for TLS),
        # as a second softphone on one machine.
        sip_addr = f"{ip}:5060" if netns or not ip.startswith("127.") else f"127.0.0.1:{15000 + 2 * int(ip.rsplit('.', 1)[1])}"
        (self.dir / "config").write_text(
            f"poll_method epoll\nnet_interface {ip}\nsip_listen {sip_addr}\n"
            f"audio_player aubridge,nil\naudio_alert aubridge,nil\naudio_source aufile,{tone}\n"
            "rtp_stats yes\nmodule_path /usr/lib/baresip/modules\n"
            # before the modules: a module_tmp line here (uuid.so) loads before account.so makes the UA
            + (config + "\n" if config else "")
            + "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule_tmp account.so\nmodule_app menu.so\n")
        (self.dir / "accounts").write_text(account + "\n")
        self.ip = ip
        self.sip_addr = sip_addr  # where its SIP leaves from (ip:port)
        self.netns = netns  # run in that network namespace (tests/netns.py)
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self, *commands: str) -> "Baresip":
        args = (["ip", "netns", "exec", self.netns] if self.netns else []) + ["baresip", "-f", str(self.dir), "-t", str(self.LIFETIME_S)]
        for command in commands:
            args += ["-e", command]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", start_new_session=True, cwd=self.dir)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return self.output
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = "\n".join(line for line in self.output.splitlines() if not line.startswith("["))[-3000:]
        raise AssertionError(f"baresip {self.ip}: no {text!r} within {timeout}s:\n{tail}")

    def packets(self) -> tuple[int, int]:
        """RTP packets (sent, received) of the last call, from baresip's summary at its end."""
        found = re.findall(r"^packets:\s+(\d+)\s+(\d+)", self.output, re.M)
        assert found, f"baresip {self.ip}: no RTP summary"
        return int(found[-1][0]), int(found[-1][1])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
