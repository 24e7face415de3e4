"""Topology hiding's pieces on the Python side: topos's marker header (kemi.routing), checked against
the topos module Kamailio loads (kamailio.cfg), and the configuration that turns it on."""

import re
from pathlib import Path

import pytest

from kemi import routing
from kemi.store import ndb_redis

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


def test_kamailio_cfg_hides_the_topology_with_its_records_in_redis():
    cfg = (ROOT / "kamailio.cfg").read_text()
    for module in ("ndb_redis", "topos", "topos_redis"):
        assert f'loadmodule "{module}.so"' in cfg
    assert 'modparam("topos", "storage", "redis")' in cfg
    # db_text scanned its tables for every message: 13-80 ms a call at 100 calls/s (bench/PERF.md)
    assert 'loadmodule "db_text.so"' not in cfg
    server = re.search(r'modparam\("topos_redis", "serverid", "(\w+)"\)', cfg).group(1)
    assert re.search(r'modparam\("ndb_redis", "server", TOPOS_REDIS\)', cfg)
    assert server == ndb_redis.SERVER_NAME
    assert "-m kemi.store.ndb_redis" in (ROOT / "scripts" / "kamailio.sh").read_text()
    # a connected call keeps its record as long as the dialog module keeps the call
    longest = re.search(r'modparam\("dialog", "default_timeout", (\d+)\)', cfg).group(1)
    assert re.search(rf'modparam\("topos", "dialog_expire", {longest}\)', cfg)


@pytest.mark.parametrize("url, server, problem", [
    ("redis://127.0.0.1:6390/2", "name=topos;addr=127.0.0.1;port=6390;db=2", None),
    ("redis://h", "name=topos;addr=h;port=6379;db=0", None),
    ("unix:///run/redis/redis.sock?db=3", "name=topos;unix=/run/redis/redis.sock;db=3", None),
    ("redis://:s3cret@10.0.0.1:6379/0", "name=topos;addr=10.0.0.1;port=6379;db=0;pass=s3cret", None),
    ("redis://default:s3cret@10.0.0.1/1", "name=topos;addr=10.0.0.1;port=6379;db=1;pass=s3cret", None),
    # what ndb_redis 5.6 cannot do: still a line (Kamailio starts, calls go on), and the reason
    ("redis://proxy:pw@10.0.0.1/0", "name=topos;addr=10.0.0.1;port=6379;db=0;pass=pw", "ACL user"),
    ("rediss://h:6380/0", "name=topos;addr=h;port=6380;db=0", "TLS"),
    ("redis://:a%3Bb@h/1", "name=topos;addr=h;port=6379;db=1", "';'"),
])
def test_redis_url_in_ndb_redis_words(url, server, problem):
    found = ndb_redis.ndb_server(url)
    assert found.server == server
    assert (found.problem is None) if problem is None else (problem in found.problem)


def test_the_cli_prints_the_line_and_warns_on_stderr(capsys):
    assert ndb_redis.main(["x", "redis://proxy:pw@h/0"]) == 0
    out, err = capsys.readouterr()
    assert out == "name=topos;addr=h;port=6379;db=0;pass=pw\n" and "WARNING: topology hiding" in err
    assert ndb_redis.main(["x"]) == 2
    assert ndb_redis.main(["x", "http://h/"]) == 2


def test_a_required_url_ndb_redis_cannot_use_stops_the_start(capsys):
    """TOPOS_REDIS_URL (a deployment's, scripts/kamailio.sh --required): no line, exit 2, the reason."""
    assert ndb_redis.main(["x", "--required", "redis://proxy:pw@h/0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "ERROR: topology hiding cannot use TOPOS_REDIS_URL (ACL user 'proxy'" in err
    assert ndb_redis.main(["x", "--required", "rediss://h:6380/0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "(TLS (rediss://)" in err
    assert ndb_redis.main(["x", "--required", "redis://:s3cret@10.0.0.1:6379/0"]) == 0
    out, err = capsys.readouterr()
    assert out == "name=topos;addr=10.0.0.1;port=6379;db=0;pass=s3cret\n" and err == ""
    assert ndb_redis.main(["x", "--required"]) == 2
