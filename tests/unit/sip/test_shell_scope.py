"""Sip.scope: a callback reads the message's fixed parts from Kamailio once; callbacks nest."""

from __future__ import annotations

from kemi.sip.shell import Sip
from tests.fake_ksr import FakeKSR


def test_fixed_parts_are_read_once_per_callback_and_nested_callbacks_read_their_own():
    ksr = FakeKSR(src="127.0.0.10")
    sip = Sip(ksr)
    with sip.scope():
        assert sip.source == ("127.0.0.10", 5060)
        ksr.request["$si"] = "127.0.0.99"  # what a nested callback's message would say
        assert sip.pv("$si") == "127.0.0.10"
        with sip.scope():
            assert sip.pv("$si") == "127.0.0.99"
        assert sip.pv("$si") == "127.0.0.10"
    assert sip.pv("$si") == "127.0.0.99"  # outside any callback: always asked


def test_what_routes_change_is_always_read_again():
    ksr = FakeKSR(ruri="sip:2002@acme.test")
    sip = Sip(ksr)
    with sip.scope():
        assert sip.pv("$ru") == "sip:2002@acme.test"
        sip.set_ruri("sip:2002@127.0.0.30:5070")
        assert sip.pv("$ru") == "sip:2002@127.0.0.30:5070"
