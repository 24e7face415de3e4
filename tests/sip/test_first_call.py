"""The README's First call, followed with baresip from Debian against scripts/run.sh and its stand-ins.

A phone registers with the README's account line and dials what the README says; the demo's
carrier and emergency centre are run.sh's SIPp stand-ins; the receptionist and the announcement
server are run.sh's media servers (media/: the greeting and its DTMF menu, the spoken balance).
Media flows phone <-> rtpengine <-> stand-in (the proxy anchors every call), so received RTP packets
prove the call really connected. run.sh binds the demo's fixed addresses: run in a private network
namespace, unshare -n sh -c 'ip link set lo up && ./scripts/test.sh -q tests/sip/test_first_call.py'
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.harness import ROOT, admin
from tests.sip.product import Baresip, RunSh, demo_addresses_free, readme_accounts, readme_section, readme_tls_setup

# SIPp's sample recording that the stand-ins play: 236 RTP packets (7 s of G.711 A-law).
RECORDING_PACKETS = 236
# Each phone on its own loopback address, clear of the 127.0.0.10-59 the other SIP tests use.
ALICE_IP, BRUNO_IP = "127.0.0.61", "127.0.0.62"
FIRST_CALL = readme_section("First call")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """scripts/run.sh as the README starts it: the demo office, its stand-ins, the proxy on 127.0.0.1:5060."""
    demo_addresses_free()
    run = RunSh(tmp_path_factory.mktemp("first-call")).start()
    try:
        yield run.up()
        assert run.stop() == 0
        assert run.group_gone()
    finally:
        run.kill()


@pytest.fixture
def phones(tmp_path):
    made: list[Baresip] = []

    def phone(user: str, ip: str, talk_s: float, *commands: str, auto_answer: bool = False,
              account: str | None = None, config: str = "") -> Baresip:
        # a person would type /accept; the test lets baresip answer by itself
        account = (account or readme_accounts()[user]) + (";answermode=auto" if auto_answer else "")
        made.append(Baresip(tmp_path, account, ip, talk_s, config=config).start(*commands))
        return made[-1]

    yield phone
    for p in made:
        p.stop()


def standin_log(demo: RunSh, name: str) -> str:
    path = demo.run_dir / f"standin-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def media_log(demo: RunSh, name: str) -> str:
    path = demo.run_dir / f"media-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def announcement_packets(cents: int) -> int:
    """20 ms packets of the demo announcer's sentence for this balance (acme speaks French)."""
    from media import numwords, prompts
    from media.tts import Speech, duration_s
    said = prompts.parse((ROOT / "media" / "prompts.txt").read_text(encoding="utf-8"))
    text = said.say("fr", "balance", amount=numwords.amount(cents, "EUR", "fr"))
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as cache:
        return int(duration_s(Speech(Path(cache), 8000).sentence(text, "fr")) * 50)


def registered(phone: Baresip, user: str) -> None:
    phone.wait_for(f"{user}@acme.cowork.example: {{0/UDP/v4}} 200 OK () [1 binding]", 15)


def test_the_readme_gives_one_account_line_per_demo_phone():
    accounts = readme_accounts()
    assert accounts["2001"] == '<sip:2001@acme.cowork.example>;auth_pass=alice-demo-secret;outbound="sip:127.0.0.1:5060"'
    assert set(accounts) == {"2001", "2002"}


def test_an_outside_call_is_answered_by_the_carrier_with_its_recording(demo, phones):
    assert "`/dial 0123456789`" in FIRST_CALL
    alice = phones("2001", ALICE_IP, 9, "/dial 0123456789")
    registered(alice, "2001")
    alice.wait_for("Call established: sip:0123456789@acme.cowork.example", 20)
    alice.wait_for("terminated (duration:", 20)  # the 9 s of talk are over: baresip hangs up
    sent, received = alice.packets()
    assert received >= RECORDING_PACKETS - 5, (sent, received)
    assert sent >= 8 * 50, (sent, received)  # 20 ms packets
    carrier = standin_log(demo, "carrier-a")
    assert "ANSWERED sip:+33123456789@127.0.0.2:5060;transport=udp" in carrier and "HUNGUP" in carrier


def test_an_internal_call_connects_both_ways(demo, phones):
    assert "`/dial 2002`" in FIRST_CALL
    bruno = phones("2002", BRUNO_IP, 30, auto_answer=True)
    registered(bruno, "2002")
    alice = phones("2001", ALICE_IP, 5, "/dial 2002")
    alice.wait_for("Call established: sip:2002@acme.cowork.example", 20)
    bruno.wait_for("Call established: sip:2001@acme.cowork.example", 5)
    alice.wait_for("terminated (duration:", 20)
    bruno.wait_for("terminated (duration:", 10)
    for phone in (alice, bruno):
        sent, received = phone.packets()
        assert sent >= 4 * 50 and received >= 4 * 50, (phone.ip, sent, received)


def test_112_is_answered_by_the_emergency_stand_in(demo, phones):
    assert "`/dial 112`" in FIRST_CALL
    alice = phones("2001", ALICE_IP, 3, "/dial 112")
    alice.wait_for("Call established: sip:112@acme.cowork.example", 20)
    alice.wait_for("terminated (duration:", 15)
    assert alice.packets()[1] >= 2 * 50
    assert "ANSWERED sip:112@127.0.0.5:5060" in standin_log(demo, "emergency")


def test_refusals_reach_the_phone_with_their_reason(demo, phones):
    alice = phones("2001", ALICE_IP, 3, "/dial 0899123456")
    alice.wait_for("session closed: 403 Premium-rate or shared-cost number blocked", 15)


def test_a_prepaid_call_hears_the_announcement_then_the_carrier(demo, phones):
    assert "`/dial 004915112345678`" in FIRST_CALL
    refused = phones("2001", ALICE_IP, 3, "/dial 004915112345678")
    refused.wait_for("session closed: 403 Prepaid Account Not Activated", 15)
    refused.stop()
    # the administrator's commands, as the README writes them
    for command in (["prepaid", "activate", "acme"], ["prepaid", "topup", "acme", "50.00", "--ref", "demo-1"],
                    ["rate", "set", "+4915", "0.60"]):
        assert f".venv/bin/python -m kemi.admin {' '.join(command)}" in FIRST_CALL
        admin(demo.redis_url, *command)
    alice = phones("2001", ALICE_IP, 11, "/dial 004915112345678")
    alice.wait_for("183 Session Progress", 20)
    alice.wait_for("Call established: sip:004915112345678@acme.cowork.example", 20)
    alice.wait_for("terminated (duration:", 20)
    # the spoken balance as early media ("cinquante euros"), then the carrier's recording
    assert alice.packets()[1] >= announcement_packets(5000) + RECORDING_PACKETS - 10
    assert "announce company=acme balance=5000 currency=EUR language=fr" in media_log(demo, "announcer")
    assert "ANSWERED sip:+4915112345678@127.0.0.2:5060;transport=udp" in standin_log(demo, "carrier-a")
    shown = admin(demo.redis_url, "prepaid", "show", "acme").stdout
    assert "2001 -> +4915112345678  answered" in shown and "cost 0.60" in shown


@pytest.mark.parametrize("command, user, ip", [
    (["+33142685302"], "2002", BRUNO_IP),
    (["--dtmf", "2001", "+33142685300"], "2001", ALICE_IP)])
def test_a_call_from_outside_rings_its_extension(demo, phones, command, user, ip):
    """scripts/call-in.sh, as the README shows it: 2002's own number rings 2002; the main number is
    answered by the receptionist's greeting (early media), the caller dials 2001 in RFC 4733 events,
    and 2001 rings."""
    assert f"`scripts/call-in.sh {' '.join(command)}`" in FIRST_CALL
    phone = phones(user, ip, 30, auto_answer=True)
    registered(phone, user)
    call = subprocess.run([str(ROOT / "scripts" / "call-in.sh"), *command, "3"], env={**demo.env, "DTMF_AFTER_S": "1"},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert call.returncode == 0, call.stdout + call.stderr
    assert "call-in: answered; the carrier hung up after 3s (BYE: 200 OK)" in call.stdout
    phone.wait_for("Call established: sip:+33612345678@127.0.0.2", 5)
    phone.wait_for("terminated (duration:", 10)
    assert phone.packets()[1] >= 2 * 50  # the carrier's recording reached the phone
    dialled = re.search(r"call=(\S+) redirect extension=2001 why=dialled", media_log(demo, "reception"))
    assert (dialled is not None) == (command[0] == "--dtmf"), media_log(demo, "reception")[-2000:]


# -- SIP over TLS (the README's section): baresip's account line with ;transport=tls ------------------
def tls_phone(demo: RunSh, phones, talk_s: float, *commands: str, auto_answer: bool = False) -> Baresip:
    """2001 over TLS as the README sets it up, trusting run.sh's demo certificate (from run.sh's
    own announcement, with the README's .run/ replaced by this run's RUN_DIR)."""
    account, config = readme_tls_setup()
    assert account.startswith("<sip:2001@") and ";transport=tls" in account and "5061;transport=tls" in account
    cert = f"{demo.run_dir}/tls/demo-cert.pem"
    assert f"run: TLS with the self-signed demo certificate {cert} " in demo.output
    assert config == "sip_cafile .run/tls/demo-cert.pem"
    return phones("2001", ALICE_IP, talk_s, *commands, auto_answer=auto_answer, account=account,
                  config=f"sip_cafile {cert}")


def test_a_tls_phone_calls_a_udp_phone_and_hangs_up(demo, phones):
    bruno = phones("2002", BRUNO_IP, 30, auto_answer=True)
    registered(bruno, "2002")
    alice = tls_phone(demo, phones, 4, "/dial 2002")
    alice.wait_for("2001@acme.cowork.example: {0/TLS/v4} 200 OK () [1 binding]", 15)
    alice.wait_for("Call established: sip:2002@acme.cowork.example", 20)
    bruno.wait_for("Call established: sip:2001@acme.cowork.example", 5)
    alice.wait_for("terminated (duration:", 20)  # alice's BYE, over TLS, reaches bruno on UDP
    bruno.wait_for("terminated (duration:", 10)
    for phone in (alice, bruno):
        sent, received = phone.packets()
        assert sent >= 3 * 50 and received >= 3 * 50, (phone.ip, sent, received)


def test_a_udp_phone_calls_a_tls_phone_and_hangs_up(demo, phones):
    alice = tls_phone(demo, phones, 30, auto_answer=True)
    alice.wait_for("2001@acme.cowork.example: {0/TLS/v4} 200 OK () [1 binding]", 15)
    bruno = phones("2002", BRUNO_IP, 4, "/dial 2001")
    alice.wait_for("Call established: sip:2002@acme.cowork.example", 20)  # rung over its TLS connection
    bruno.wait_for("Call established: sip:2001@acme.cowork.example", 5)
    bruno.wait_for("terminated (duration:", 20)  # bruno's BYE reaches alice over TLS
    alice.wait_for("terminated (duration:", 10)
    for phone in (alice, bruno):
        sent, received = phone.packets()
        assert sent >= 3 * 50 and received >= 3 * 50, (phone.ip, sent, received)
