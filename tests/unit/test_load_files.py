"""The load suite's generated files: a provisioning file kemi.admin accepts, and SIPp injection
files whose every line is a call the product routes as its call type (bench/gen_office.py,
bench/sipp_csv.py)."""

from __future__ import annotations

import re

from bench import gen_office, sipp_csv
from kemi import numbering
from kemi.provisioning import parse


def test_generated_office_is_a_valid_provisioning_file(tmp_path):
    path = tmp_path / "office.yaml"
    gen_office.write(str(path), 3, 4, first=2)
    prov = parse(path.read_text(), str(path))
    assert [c.id for c in prov.companies] == ["co2", "co3"]
    assert all(len(c.extensions) == 4 and len(c.dids) == 5 for c in prov.companies)
    assert {t.name for t in prov.trunks} == {"trunk", "emergency", "carrier-in"}


def test_every_injection_line_is_the_call_type_it_claims():
    office = gen_office.office(3, 4)
    files, skipped = sipp_csv.rows(office, {"co2"})
    assert skipped == 0
    passwords = {(e["number"], c["domain"]): e["password"] for c in office["companies"] for e in c["extensions"]}
    auth = re.compile(r"\[authentication username=(\d+) password=(\S+)\]")
    for name in ("users", "internal", "domestic", "international", "prepaid", "emergency"):
        for user, domain, credentials, *dialled in files[name]:
            assert auth.fullmatch(credentials).groups() == (user, passwords[(user, domain)])
    assert len(files["users"]) == 12 and len(files["prepaid"]) == 4
    assert all(d.startswith("co2.") for _, d, _, _ in files["prepaid"])
    assert all(dial != user and dial in {u for u, dom in passwords if dom == d}
               for user, d, _, dial in files["internal"])
    expect = {"domestic": ("domestic", "included"), "international": ("international", "included"),
              "prepaid": ("international", "prepaid"), "emergency": ("emergency", "included")}
    for name, (category, billing) in expect.items():
        dialled = [line[3] for line in files[name]]
        assert all((numbering.classify(n).category, numbering.classify(n).billing) == (category, billing)
                   for n in dialled), name
        assert name == "emergency" or len(set(dialled)) == len(dialled)
    dids = {d["number"]: d["target"] for c in office["companies"] for d in c["dids"]}
    assert all(dids[did] != "receptionist" for did, _ in files["did"]) and len(files["did"]) == 12
    assert all(dids[did] == "receptionist" for did, _ in files["reception"]) and len(files["reception"]) == 3


def test_extensions_without_a_password_are_skipped_and_counted():
    office = gen_office.office(1, 2)
    del office["companies"][0]["extensions"][0]["password"]
    office["companies"][0]["extensions"][0]["ha1"] = "0" * 32
    files, skipped = sipp_csv.rows(office, None)
    assert skipped == 1 and [u[0] for u in files["users"]] == ["2002"]
