"""SIPp injection files (-inf) from a provisioning file, one per call type of the user guide.

    python3 bench/sipp_csv.py PROVISIONING.yaml OUTDIR [--prepaid co1,co2] [--order SEQUENTIAL|RANDOM]

Reads the file `kemi.admin load` reads (bench/gen_office.py makes large ones) and writes to OUTDIR:

| file | fields | scenario (sipp-scenarios/load/) | the call |
|---|---|---|---|
| users.csv | user;domain;[authentication username=U password=P] | register.xml | every phone extension that has a password |
| internal.csv | user;domain;[authentication ...];dialled | call.xml | each phone calls the next phone extension of its company |
| domestic.csv | as internal | call.xml | a French landline 01 4X XX XX XX, distinct per line (included) |
| international.csv | as internal | call.xml | a Berlin landline 0049 30 XXXXXXXX (included country) |
| prepaid.csv | as internal | call.xml | a German mobile 0049 151 XXXXXXXX, from the --prepaid companies only |
| emergency.csv | as internal | call.xml | 112 |
| did.csv | dialled;caller | carrier-call.xml | each phone's own DID, called from outside |
| reception.csv | dialled;caller | carrier-call.xml | each company's DIDs that go to the receptionist |

Extensions provisioned with `ha1` only (no password) cannot be driven and are skipped (counted on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

FILES = ("users", "internal", "domestic", "international", "prepaid", "emergency", "did", "reception")


def load(path: Path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader) or {}


def phones(company: dict) -> list[dict]:
    return [e for e in company.get("extensions") or () if e.get("type", "phone") == "phone" and "password" in e]


def rows(office: dict, prepaid: set[str] | None) -> tuple[dict[str, list[list[str]]], int]:
    """Every file's lines (prepaid None: every company), and how many extensions were skipped."""
    out: dict[str, list[list[str]]] = {name: [] for name in FILES}
    skipped = n = 0
    for company in office.get("companies") or ():
        domain = company["domain"]
        mine = phones(company)
        skipped += sum(1 for e in company.get("extensions") or ()
                       if e.get("type", "phone") == "phone" and "password" not in e)
        for i, ext in enumerate(mine):
            # SIPp 3.6 does not expand [fieldN] inside [authentication ...]: the whole keyword is the field
            me = [ext["number"], domain, f"[authentication username={ext['number']} password={ext['password']}]"]
            out["users"].append(me)
            if len(mine) > 1:
                out["internal"].append(me + [mine[(i + 1) % len(mine)]["number"]])
            out["domestic"].append(me + [f"014{n % 10}{n // 10 % 1000000:06d}"])
            out["international"].append(me + [f"004930{n % 100000000:08d}"])
            if prepaid is None or company["id"] in prepaid:
                out["prepaid"].append(me + [f"0049151{n % 100000000:08d}"])
            out["emergency"].append(me + ["112"])
            n += 1
        targets = {e["number"] for e in mine}
        for did in company.get("dids") or ():
            caller = f"+3361{len(out['did']) + len(out['reception']):07d}"
            if did.get("target") == "receptionist":
                out["reception"].append([did["number"], caller])
            elif did.get("target") in targets:
                out["did"].append([did["number"], caller])
    return out, skipped


def write(outdir: Path, files: dict[str, list[list[str]]], order: str = "SEQUENTIAL") -> dict[str, int]:
    outdir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, lines in files.items():
        with open(outdir / f"{name}.csv", "w", encoding="ascii") as handle:
            handle.write(order + "\n")
            handle.writelines(";".join(fields) + ";\n" for fields in lines)
        counts[name] = len(lines)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("provisioning")
    parser.add_argument("outdir")
    parser.add_argument("--prepaid", help="companies whose Prepaid Account is active (comma list); default: all")
    parser.add_argument("--order", choices=["SEQUENTIAL", "RANDOM"], default="SEQUENTIAL")
    args = parser.parse_args(argv)
    prepaid = set(args.prepaid.split(",")) if args.prepaid else None
    try:
        files, skipped = rows(load(Path(args.provisioning)), prepaid)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        print(f"sipp_csv: {args.provisioning}: cannot read ({exc!r})", file=sys.stderr)
        return 2
    counts = write(Path(args.outdir), files, args.order)
    if skipped:
        print(f"sipp_csv: {skipped} extensions have no password (ha1 only): skipped", file=sys.stderr)
    print(", ".join(f"{name}.csv {count}" for name, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
