"""The per-message latency bench (bench/route_latency.py, which drives bench/cpu_per_call.py's runs)
in seconds: both systems log the time of every request route, and each message of a call is found.
Its SIPp peers use the bench's fixed loopback addresses (the trunk 127.0.0.2:5060), hence tests/sip/."""

from __future__ import annotations

import subprocess

from tests.harness import PYTHON, ROOT

CALLS = 20


def test_every_message_of_a_call_and_of_a_registration_is_timed_in_both_systems():
    proc = subprocess.run([PYTHON, str(ROOT / "bench" / "route_latency.py"), "--calls", str(CALLS), "--rate", "20",
                           "--kind", "outbound,register"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith(("outbound:", "register:")):
            kind = line.split(":")[0]
        elif line.startswith("  ") and line.split()[0].isdigit():
            parts = line.split()
            rows[(kind, f"{parts[0]} {parts[1]}")] = parts
    expected = [("outbound", "1 INVITE"), ("outbound", "2 ACK"), ("outbound", "2 INVITE"), ("outbound", "3 BYE"),
                ("register", "1 REGISTER"), ("register", "2 REGISTER")]
    assert sorted(rows) == sorted(expected), proc.stdout
    for key, parts in rows.items():
        # message, count, product median / mean, native median / mean, ratio: both systems timed
        assert int(parts[2]) == CALLS and parts[-1].endswith("x"), (key, parts)
