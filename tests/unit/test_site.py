"""A site of several proxies: the Path a proxy saves, what it relays for a sibling, db_redis's URL."""

from __future__ import annotations

import re

import pytest

from kemi import edge
from kemi.paths import ROOT
from kemi.store import db_redis


@pytest.mark.parametrize("socket, source, path", [
    (("198.51.100.10", 5060, "udp"), ("198.51.100.2", 20001, "udp"),
     "<sip:198.51.100.10:5060;lr;received=sip:198.51.100.2:20001>"),
    (("198.51.100.10", 5061, "tls"), ("203.0.113.9", 40000, "tls"),
     "<sip:198.51.100.10:5061;transport=tls;lr;received=sip:203.0.113.9:40000%3Btransport%3Dtls>"),
    (("2001:db8::1", 5060, "tcp"), ("2001:db8::2", 5070, "tcp"),
     "<sip:[2001:db8::1]:5060;transport=tcp;lr;received=sip:[2001:db8::2]:5070%3Btransport%3Dtcp>"),
])
def test_the_path_names_this_proxy_and_where_the_phone_really_is(socket, source, path):
    assert edge.own_path(edge.Address(*socket), edge.Address(*source)) == path
    # one received parameter, the escaped transport inside it: what path's use_received reads back
    assert path.count(";received=") == 1 and ";transport=" not in path.split(";received=")[1]


@pytest.mark.parametrize("own, beyond, ok", [
    (["sip:198.51.100.10:5060;lr;received=sip:198.51.100.2:20001"], [], True),
    (["sip:198.51.100.10:5060;lr;RECEIVED=sip:198.51.100.2:20001"], [], True),
    (["sip:198.51.100.10:5060;lr"], [], False),                       # no phone named
    (["sip:198.51.100.10:5060;lr;received=sip:x:1"], ["sip:198.51.100.30;lr"], False),  # beyond us
    (["sip:198.51.100.10;lr;r2=on", "sip:198.51.100.10:5061;lr;r2=on;received=sip:x:1"], [], False),
    ([], [], False),
])
def test_a_sibling_is_relayed_for_only_by_one_path_entry_of_ours(own, beyond, ok):
    assert (edge.sibling_route_refusal(own, beyond) is None) == ok


@pytest.mark.parametrize("url, db, expected", [
    ("redis://127.0.0.1:6379/0", 1, "redis://127.0.0.1:6379/1"),
    ("redis://:s3cret@10.0.0.21:6380/2", None, "redis://default:s3cret@10.0.0.21:6380/2"),
    ("redis://default:s%40x@h/0", 3, None),          # '@' in the password: Kamailio's URL parser splits there
    ("redis://cowork-proxy:pw@h:6379/0", 1, None),   # an ACL user: db_redis 5.6 sends AUTH <password> only
    ("rediss://h:6379/0", 1, None),                  # TLS
    ("unix:///run/redis.sock?db=0", 1, None),        # db_redis connects over TCP only
])
def test_db_redis_gets_a_url_it_can_use_or_the_start_stops(url, db, expected):
    if expected is None:
        with pytest.raises(ValueError):
            db_redis.db_url(url, db)
    else:
        assert db_redis.db_url(url, db) == expected


def test_the_location_version_is_the_schema_files(tmp_path):
    (tmp_path / "location").write_text("id/int,ruid/string\n9\n")
    assert db_redis.table_version("location", tmp_path) == 9


def test_kamailio_cfg_keeps_the_location_in_redis_only_when_asked_and_says_what_db_redis_needs():
    cfg = (ROOT / "kamailio.cfg").read_text()
    block = next(part.split("#!endif", 1)[0] for part in cfg.split("#!ifdef LOCATION_IN_REDIS")[1:]
                 if 'modparam("usrloc", "db_mode", 3)' in part.split("#!endif", 1)[0])
    assert 'modparam("usrloc", "db_mode", 3)' in block and 'modparam("usrloc", "db_url", LOCATION_DB_URL)' in block
    assert re.search(r'modparam\("db_redis", "keys", "location=entry:ruid&usrdom:username,domain&timer:partition,'
                     r'keepalive"\)', block)
    assert 'modparam("nathelper", "filter_server_id", 1)' in block
    for command in ("HMSET", "HMGET", "SMEMBERS", "KEYS", "EXISTS", "HSETNX"):
        assert command in cfg.split("(sitereg)", 1)[1].split("(end of Site)", 1)[0]
    kamailio_sh = (ROOT / "scripts" / "kamailio.sh").read_text()
    assert "-m kemi.store.db_redis" in kamailio_sh and "-A LOCATION_IN_REDIS" in kamailio_sh
