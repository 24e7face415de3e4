"""Topology hiding's pieces on the Python side: topos's marker header (kemi.routing), checked against
the topos module Kamailio loads (kamailio.cfg), and the configuration that turns it on."""

import re
from pathlib import Path

import pytest

from kemi import routing

ROOT = Path(__file__).resolve().parents[2]
TOPOS_SO = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/topos.so")


@pytest.mark.parametrize("count, forged", [(0, False), (1, False), (2, True), (7, True)])
def test_a_request_may_carry_only_the_marker_topos_added(count, forged):
    assert routing.topos_marker_forged(count) is forged


def test_the_marker_survives_the_in_dialog_allow_list_but_no_initial_request_carries_it():
    """topos adds it only to in-dialog requests it restored, and takes it off before they leave;
    the allow-list sits in between (kemi.sip.in_dialog)."""
    name = routing.TOPOS_DIALOG_HEADER.lower()
    assert name in routing.IN_DIALOG_TRUNK_HEADERS
    assert re.match(routing.IN_DIALOG_TRUNK_HEADERS_PATTERN, name, re.I)
    assert name not in routing.TRUNK_HEADERS
    assert routing.headers_outside(f"{routing.TOPOS_DIALOG_HEADER}: atpsh-1\r\n", routing.TRUNK_HEADERS) == \
        [routing.TOPOS_DIALOG_HEADER]


@pytest.mark.skipif(not TOPOS_SO.exists(), reason="Debian's kamailio package not installed")
def test_the_marker_is_the_header_the_installed_topos_writes():
    assert routing.TOPOS_DIALOG_HEADER.encode() in TOPOS_SO.read_bytes()


def test_kamailio_cfg_hides_the_topology_with_shared_memory_storage():
    cfg = (ROOT / "kamailio.cfg").read_text()
    assert 'loadmodule "topos.so"' in cfg and 'loadmodule "db_text.so"' in cfg
    assert 'modparam("topos", "storage", "db")' in cfg
    assert "topos_redis.so" not in cfg  # 24 Redis round trips more per call (tests/sip/test_roundtrips.py)
    # a connected call keeps its record as long as the dialog module keeps the call
    longest = re.search(r'modparam\("dialog", "default_timeout", (\d+)\)', cfg).group(1)
    assert re.search(rf'modparam\("topos", "dialog_expire", {longest}\)', cfg)
