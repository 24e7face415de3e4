"""Settings (kemi/settings.py): every default and range, and the one place they are written."""

from __future__ import annotations

import dataclasses
import re

import pytest

from kemi.paths import ROOT
from kemi.settings import Settings, SettingsError

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def test_every_default():
    assert Settings.from_env({}) == Settings(
        redis_url="redis://127.0.0.1:6379/0", redis_timeout_ms=250, schema_recheck_s=5, trunk_timeout_ms=3000,
        emergency_trunks="", prepaid_max_call_s=7200, prepaid_setup_s=120, prepaid_ttl_margin_s=60,
        ban_s=300, auth_fail_max=10, auth_fail_window_s=600, auth_ban_s=900,
        scanner_user_agents="friendly-scanner,friendly-request,sipcli,sipvicious,sip-scan,VaxSIPUserAgent,pplsip,"
                            "iWar,SIVuS,smap")
    assert Settings().scanner_agents == ("friendly-scanner", "friendly-request", "sipcli", "sipvicious", "sip-scan",
                                         "vaxsipuseragent", "pplsip", "iwar", "sivus", "smap")
    assert Settings.from_env({}) == Settings()  # the environment adds nothing when it says nothing
    assert Settings.from_env({name: "" for name in ("REDIS_URL", "REDIS_TIMEOUT_MS", "EMERGENCY_TRUNKS")}) == Settings()


def test_every_setting_is_read_from_its_variable():
    env = {"REDIS_URL": "redis://10.0.0.9:6390/4", "REDIS_TIMEOUT_MS": "60000", "SCHEMA_RECHECK_S": "1",
           "TRUNK_TIMEOUT_MS": "500", "EMERGENCY_TRUNKS": "udp:127.0.0.5:5060,tcp:127.0.0.6:5070",
           "PREPAID_MAX_CALL_S": "86400", "PREPAID_SETUP_S": "3600", "PREPAID_TTL_MARGIN_S": "1",
           "CALL_ID_GRACE_S": "60", "BAN_S": "4", "AUTH_FAIL_MAX": "1000000", "AUTH_FAIL_WINDOW_S": "60", "AUTH_BAN_S": "86400",
           "SCANNER_USER_AGENTS": " Evil-Bot , scan", "EMERGENCY_CALLS_MAX": "1000", "EMERGENCY_WINDOW_S": "1",
           "EMERGENCY_UNIDENTIFIED_MAX": "100000", "SITE_PHONE_REQS": "100000", "SITE_PHONE_WINDOW_S": "3600",
           "SDP_MAX_BYTES": "4096", "SDP_MAX_STREAMS": "2",
           "MEDIA_STREAMS_MAX": "500", "MEDIA_EMERGENCY_RESERVE": "20", "MEDIA_STREAMS_PER_COMPANY": "50",
           "MEDIA_STREAMS_PER_PHONE": "3", "SITE_PROXIES": " 10.0.0.2, 10.0.0.3 ",
           "REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "10000"}
    got = Settings.from_env(env)
    assert got == Settings(
        redis_url="redis://10.0.0.9:6390/4", redis_timeout_ms=60000, redis_wait_replicas=1,
        redis_wait_timeout_ms=10000, schema_recheck_s=1, trunk_timeout_ms=500,
        emergency_trunks="udp:127.0.0.5:5060,tcp:127.0.0.6:5070", prepaid_max_call_s=86400,
        prepaid_setup_s=3600, prepaid_ttl_margin_s=1, call_id_grace_s=60, ban_s=4, auth_fail_max=1_000_000, auth_fail_window_s=60,
        auth_ban_s=86400, scanner_user_agents=" Evil-Bot , scan", emergency_calls_max=1000, emergency_window_s=1,
        emergency_unidentified_max=100_000, site_phone_reqs=100_000, site_phone_window_s=3600,
        sdp_max_bytes=4096, sdp_max_streams=2,
        media_streams_max=500, media_emergency_reserve=20, media_streams_per_company=50, media_streams_per_phone=3,
        site_proxies=" 10.0.0.2, 10.0.0.3 ")
    assert got.siblings == {"10.0.0.2", "10.0.0.3"}
    assert got.scanner_agents == ("evil-bot", "scan")
    assert sorted(env) == sorted(f.metadata["env"] for f in FIELDS.values())


@pytest.mark.parametrize("name", [f.name for f in FIELDS.values() if f.metadata["limits"]])
def test_each_range_is_enforced_at_both_ends(name):
    var, (low, high) = FIELDS[name].metadata["env"], FIELDS[name].metadata["limits"]
    assert getattr(Settings.from_env({var: str(low)}), name) == low
    assert getattr(Settings.from_env({var: str(high)}), name) == high
    for bad in (low - 1, high + 1):
        with pytest.raises(SettingsError, match=re.escape(f"{var}={bad}: expected {low}..{high}")):
            Settings.from_env({var: str(bad)})


@pytest.mark.parametrize("env, words", [
    ({"REDIS_TIMEOUT_MS": "fast"}, "REDIS_TIMEOUT_MS='fast': expected a whole number"),
    ({"REDIS_TIMEOUT_MS": "0"}, "REDIS_TIMEOUT_MS=0: expected 1..60000"),
    ({"REDIS_URL": "http://x"}, "REDIS_URL='http://x'"),
    ({"EMERGENCY_TRUNKS": "udp:127.0.0.5"}, "EMERGENCY_TRUNKS item 'udp:127.0.0.5'"),
    ({"SCANNER_USER_AGENTS": "sipvicious,,friendly-scanner"}, "SCANNER_USER_AGENTS='sipvicious,,friendly-scanner'"),
    ({"SCANNER_USER_AGENTS": "caf\u00e9"}, "expected comma-separated User-Agent fragments"),
    ({"SCANNER_USER_AGENTS": "x" * 65}, "1..64 characters each"),
    ({"SITE_PROXIES": "10.0.0.2,proxy2"}, "SITE_PROXIES='10.0.0.2,proxy2': expected comma-separated IPv4"),
    ({"SITE_PROXIES": "10.0.0.2:5060"}, "expected comma-separated IPv4 addresses"),
])
def test_bad_settings_name_the_variable(env, words):
    with pytest.raises(SettingsError, match=re.escape(words)):
        Settings.from_env(env)


def readme_settings_table() -> dict[str, str]:
    """README's Settings table: variable -> its default cell (a row may name several variables)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        for name in re.findall(r"`([A-Z0-9_]+)`", cells[0]):
            table[name] = cells[1]
    return table


def test_every_default_and_range_is_the_one_the_readme_states():
    table = readme_settings_table()
    assert "SIP_PORT" in table and "KAMAILIO_SHM_MB" in table  # the parser found the whole table
    for f in FIELDS.values():
        var = f.metadata["env"]
        assert var in table, f"README's Settings table has no row for {var}"
        cell = table[var]
        if f.default == "":
            assert cell.split()[0] == "empty", (var, cell)
        else:
            assert re.match(r"`([^`]*)`", cell).group(1) == str(f.default), (var, cell)
        if f.metadata["limits"]:
            low, high = f.metadata["limits"]
            assert f"({low}..{high})" in cell, (var, cell)


def test_env_sh_leaves_the_core_settings_to_settings():
    """scripts/env.sh must not hold a second default that could drift from kemi/settings.py."""
    env_sh = (ROOT / "scripts" / "env.sh").read_text(encoding="utf-8")
    assigned = set(re.findall(r"^\s*(?:export\s+)?([A-Z0-9_]+)=", env_sh, re.M))
    assert "SIP_PORT" in assigned  # the pattern reads env.sh's assignments
    assert assigned & {f.metadata["env"] for f in FIELDS.values()} == set()


def test_the_redis_password_is_never_shown():
    # REDIS_URL carries the proxy's ACL user and password (ansible/): logs and errors show neither secret.
    settings = Settings.from_env({"REDIS_URL": "redis://cowork-proxy:s3cret%2Fx@10.0.0.21:6379/0"})
    assert settings.redis_url == "redis://cowork-proxy:s3cret%2Fx@10.0.0.21:6379/0"
    assert settings.redis_where == "redis://cowork-proxy:***@10.0.0.21:6379/0"
    assert Settings.from_env({"REDIS_URL": "redis://10.0.0.9:6390/4"}).redis_where == "redis://10.0.0.9:6390/4"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"REDIS_URL": "http://cowork-proxy:s3cret@10.0.0.21:6379/0"})
    assert "s3cret" not in str(refused.value) and "cowork-proxy:***@" in str(refused.value)


def test_store_errors_name_redis_without_its_password():
    from kemi.store import Connection, StoreUnavailable
    conn = Connection(Settings.from_env({"REDIS_URL": "redis://cowork-proxy:s3cret@127.0.0.1:1/0",
                                         "REDIS_TIMEOUT_MS": "200"}))
    with pytest.raises(StoreUnavailable) as down:
        conn.ping()
    assert "s3cret" not in str(down.value) and "cowork-proxy:***@127.0.0.1:1" in str(down.value)


def test_wait_must_end_before_the_command_timeout():
    """WAIT rides in the money change's round trip: waiting longer than REDIS_TIMEOUT_MS would make an
    applied top-up or reservation look lost (sentinel, issue 20)."""
    with pytest.raises(SettingsError, match="REDIS_WAIT_TIMEOUT_MS=250: expected less than REDIS_TIMEOUT_MS=250"):
        Settings.from_env({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "250"})
    assert Settings.from_env({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "249"}).redis_wait_timeout_ms == 249
    assert Settings.from_env({"REDIS_WAIT_TIMEOUT_MS": "5000"}).redis_wait_replicas == 0  # no WAIT: no conflict
