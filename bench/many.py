"""Large offices for the bench: N companies x M extensions, their SIPp CSV, a registration storm.

    from bench.many import write_office, register_storm, caller_args

write_office(path, companies, per_company) writes a provisioning file (the demo office's trunks
and media servers, company i = domain co<i>.bench.example, extensions 2001.., password
pw-<i>-<ext>) and a SIPp injection file next to it (user;domain;[authentication ...] per phone, SEQUENTIAL).
register_storm(...) makes every phone of that CSV register through a proxy at once and reports how
long it took and how many got 200; the load-test suite can call it after restarting a proxy.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import Proxy, Sipp

TRUNKS = """trunks:
  - {name: carrier-a, host: 127.0.0.2, port: 5060, transport: udp, priority: 1}
  - {name: emergency, host: 127.0.0.5, port: 5060, transport: udp, emergency: true, outbound: false}
media_servers:
  - {name: announcer, host: 127.0.0.7, port: 5060, role: announcement}
"""
# call.xml / register.xml reading user, domain and the credentials from the -inf CSV (fields 0, 1, 2;
# SIPp takes per-call credentials as a whole [authentication ...] keyword in a field)
CSV_EDITS = (("[service]", "[field0]"), ("[$domain]", "[field1]"),
             ("[authentication]", "[field2]"))
CALL_CSV_EDITS = CSV_EDITS + (('variables="domain,dial"', 'variables="dial"'),)
REGISTER_CSV_EDITS = CSV_EDITS + (('variables="domain,expires"', 'variables="expires"'),)


def write_office(path: Path, companies: int, per_company: int) -> Path:
    """The provisioning file; returns the CSV of its phones (path with .csv)."""
    lines, rows = ["companies:"], ["SEQUENTIAL"]
    for i in range(companies):
        domain = f"co{i}.bench.example"
        lines += [f"  - id: co{i}", f"    name: Bench {i}", f"    domain: {domain}",
                  f'    main_number: "+3314{i:08d}"', f'    location: "Bench {i}"', "    extensions:"]
        for e in range(per_company):
            number = f"{2001 + e}"
            lines.append(f'      - {{number: "{number}", name: P{e}, password: "pw-{i}-{number}"}}')
            rows.append(f"{number};{domain};[authentication username={number} password=pw-{i}-{number}];")
    path.write_text("\n".join(lines) + "\n" + TRUNKS)
    csv = path.with_suffix(".csv")
    csv.write_text("\n".join(rows) + "\n")
    return csv


def register_storm(proxy: Proxy, work: Path, csv: Path, phones: int, rate: int = 2000,
                   ip: str = "127.0.0.40", timeout: float = 600) -> tuple[float, int]:
    """Every phone of the CSV registers once, offered at `rate` per second: (seconds until the last
    answer, how many got 200)."""
    sipp = Sipp("register.xml", ["-inf", str(csv), "-set", "expires", "3600"], work, ip=ip, calls=phones,
                rate=rate, edits=REGISTER_CSV_EDITS)
    started = time.monotonic()
    result = sipp.start(f"{proxy.ip}:{proxy.port}", timeout=timeout).wait(timeout + 30)
    return time.monotonic() - started, result.log.count("FINAL 200")
