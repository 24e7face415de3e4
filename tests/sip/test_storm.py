"""Storm: hundreds of phones of one building behind one masqueraded address (tests/netns.py)
register at once with SIPp CSV injection (bench/building.py, the load suite's storm step at a
CI size), while calls from the same building go on and a phone dials 112 in the middle of it.

Declared as a site (provisioning `sites:`), the building's address is never banned: every phone
registers, every call completes. Undeclared, the address is a stranger's and pike bans it (the
protection every other address keeps): most phones stay unregistered and the building's calls
fail, but its 112 call still gets through. Root only (CI runs as root).
"""

from __future__ import annotations

import pytest

from bench.building import BuildingSizes, Storm
from tests import netns
from tests.netns import ROUTER_WAN

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=netns.available() or "")


def test_a_declared_site_registers_hundreds_of_phones_from_one_address_and_its_calls_go_on(tmp_path):
    sizes = BuildingSizes(phones=300, rounds=1, register_rate=100, call_rate=3, limit_s=20, settle_s=0.5)
    r = Storm(tmp_path, sizes, site=True).run()
    (round1,) = r["rounds"]
    assert round1["registered"] == round1["phones"] == 300, round1
    assert round1["sources"] == 300, round1  # one NAT port per phone, each saved as its own "received"
    assert round1["all_registered_s"] is not None and round1["attempts"] == 1, round1
    assert r["bans"] == 0 and r["phone_bans"] == 0, r  # registering at their own pace, no phone is over its limit
    calls = r["calls"]
    assert calls["created"] > 0 and calls["completed"] == calls["created"], calls
    assert r["emergency"] == {"final": "200 OK", "completed": 1}, r


def test_an_undeclared_building_is_banned_as_a_flood_but_its_112_call_gets_through(tmp_path):
    sizes = BuildingSizes(phones=150, rounds=1, register_rate=100, call_rate=3, limit_s=5, settle_s=0.5, give_up_s=4)
    r = Storm(tmp_path, sizes, site=False).run()
    (round1,) = r["rounds"]
    assert r["banned"] == [ROUTER_WAN], r
    assert round1["registered"] < round1["phones"] and round1["all_registered_s"] is None, round1
    assert r["calls"]["completed"] < r["calls"]["created"], r["calls"]  # the building's calls are dropped too
    assert r["emergency"] == {"final": "200 OK", "completed": 1}, r  # registered before the ban: exempt
