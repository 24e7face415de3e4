"""prepaid_calls: rating, reservation, announcement, renewal and settlement (fake KSR)."""

from kemi import money, records
from kemi.sip.shell import Route, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World

GERMAN_MOBILE = "004915112345678"


def funded(world: World, balance: int = 500) -> World:
    world.ledger.rates["+4915"] = money.Rate("+4915", 60)  # 60 cents a minute: 1 cent a second
    world.ledger.balance = balance
    return world


def test_prepaid_call_reserves_then_plays_the_balance_before_the_trunk(world: World):
    ksr = funded(world).request(world.phone_invite(GERMAN_MOBILE))
    relay = ksr.relay
    assert relay.ruri == "sip:announce@127.0.0.7:5060;transport=udp"
    assert relay.failure_route == Route.FAILURE_ANNOUNCEMENT and relay.branch_route == Route.BRANCH_MEDIA
    assert ksr.vars[Var.MEDIA_HEADERS].split("\n") == ["X-Company: acme", "X-Balance: 500", "X-Currency: EUR"]
    assert ksr.vars[Var.TRUNKS_LEFT] == "carrier-a@udp:127.0.0.2:5060,carrier-b@udp:127.0.0.4:5060"
    assert ksr.vars[Var.DLG_TIMEOUT] == 480  # 500 cents buy 8 whole minutes
    rec = records.decode(ksr.vars[Var.RECORD])
    assert rec["prepaid"] and rec["max_secs"] == 480 and rec["call_id"] == "call-1"
    # money is keyed by an id the proxy minted, never by the caller's Call-ID
    assert world.ledger.reservations == {rec["reservation"]: 480} and rec["reservation"] != "call-1"


def test_a_reused_call_id_is_a_new_call_with_its_own_reservation(world: World):
    funded(world, balance=20000)  # each call reserves its longest affordable duration (cap 7200 s)
    first = records.decode(world.request(world.phone_invite(GERMAN_MOBILE)).vars[Var.RECORD])
    second = records.decode(world.request(world.phone_invite(GERMAN_MOBILE)).vars[Var.RECORD])
    assert first["call_id"] == second["call_id"] == "call-1"
    assert first["reservation"] != second["reservation"]
    assert set(world.ledger.reservations) == {first["reservation"], second["reservation"]}


def test_without_an_announcement_server_the_prepaid_call_goes_straight_to_the_trunk(world: World):
    world.directory.media = ()
    ksr = funded(world).request(world.phone_invite(GERMAN_MOBILE))
    assert ksr.relay.ruri == "sip:+4915112345678@127.0.0.2:5060;transport=udp"


def test_not_activated_no_rate_and_no_funds_have_their_own_answers(world: World):
    world.ledger.active = False
    assert world.request(world.phone_invite(GERMAN_MOBILE)).reply == (403, "Prepaid Account Not Activated")
    world.ledger.active = True
    assert world.request(world.phone_invite(GERMAN_MOBILE)).reply == (403, "No Rate For Destination")
    funded(world, balance=0)
    ksr = world.request(world.phone_invite(GERMAN_MOBILE))
    assert ksr.reply == (402, "Insufficient Prepaid Balance") and ksr.relays == []
    assert world.ledger.reservations == {}
    assert [r["disposition"] for r in world.ledger.records] == ["refused-403", "refused-403", "refused-402"]


def test_a_broken_ledger_refuses_and_tells_ops_at_error_level(world: World):
    funded(world).ledger.broken = True
    ksr = world.request(world.phone_invite(GERMAN_MOBILE))
    assert ksr.reply == (403, "Prepaid Account Not Activated") and ksr.relays == []  # never connect unpaid
    assert [text for level, text in ksr.logs if level == "err" and "LEDGER_BROKEN" in text]
    world.ledger.broken = False
    ksr = world.request(world.phone_invite(GERMAN_MOBILE, call_id="call-2"))
    assert ksr.relays and not [text for level, text in ksr.logs if level == "err"]


def test_announcement_done_dials_the_trunks_without_the_media_headers(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "a@udp:127.0.0.2:5060,b@udp:127.0.0.4:5060", Var.DIAL_USER: "+4915112345678",
                     Var.MEDIA_HEADERS: "X-Balance: 500"})
    ksr.failure_code, ksr.failure_reply_headers = 487, {"X-Announcement": "done"}
    world.router(ksr).ksr_failure_announcement(None)
    assert ksr.relay.ruri == "sip:+4915112345678@127.0.0.2:5060;transport=udp"
    assert Var.MEDIA_HEADERS not in ksr.vars and ksr.vars[Var.TRUNKS_LEFT] == "b@udp:127.0.0.4:5060"
    assert ksr.logged("warn") == []


def test_a_failed_announcement_still_connects_and_says_so(world: World):
    ksr = FakeKSR()
    ksr.vars.update({Var.TRUNKS_LEFT: "udp:127.0.0.2:5060", Var.DIAL_USER: "+4915112345678"})
    ksr.failure_code = 503
    world.router(ksr).ksr_failure_announcement(None)
    assert ksr.relay is not None and "without the balance announcement" in ksr.logged("warn")[0]


def dialog_event(world: World, event: str, rec: dict, answer_ms: str | None = None) -> FakeKSR:
    ksr = FakeKSR("BYE")
    ksr.vars[Var.RECORD] = records.encode(rec)
    if answer_ms:
        ksr.vars[Var.ANSWER_MS] = answer_ms
    world.router(ksr).ksr_dialog_event(None, event)
    return ksr


def test_answer_renews_the_reservation_for_the_whole_call_and_the_end_settles_it(world: World):
    rec = records.start(company="acme", extension="2001", caller="+33142685301", to="+4915112345678",
                        category="international", billing="prepaid", direction="outbound", call_id="c-9",
                        setup_ms=1, prepaid=True, max_secs=480)
    rec["reservation"] = "r-9"
    world.ledger.reservations["r-9"] = 480
    ksr = dialog_event(world, "dialog:start", rec)
    assert world.ledger.renewed == [("r-9", (480 + world.settings.prepaid_ttl_margin_s) * 1000)]
    assert ksr.dialog_byes == []
    assert int(ksr.vars[Var.DEADLINE_MS]) == int(ksr.vars[Var.ANSWER_MS]) + 480_000
    answered_1_5_s_ago = str(int(ksr.vars[Var.ANSWER_MS]) - 1500)
    dialog_event(world, "dialog:end", rec, answer_ms=answered_1_5_s_ago)
    assert world.ledger.settled == [("r-9", 2)] and world.ledger.reservations == {}  # seconds round up
    assert world.ledger.records[0]["disposition"] == "answered"


def test_an_answer_after_the_reservation_expired_cuts_the_call(world: World):
    rec = records.start(company="acme", extension="2001", caller=None, to="+4915112345678", category="x",
                        billing="prepaid", direction="outbound", call_id="c-11", setup_ms=1, prepaid=True,
                        max_secs=60)
    rec["reservation"] = "gone"
    ksr = dialog_event(world, "dialog:start", rec)
    assert ksr.dialog_byes[0] == "callee" and "expired" in ksr.logged("crit")[0]  # the billed leg first


def test_the_callee_is_remembered_where_its_answer_came_from(world: World):
    rec = records.start(company="acme", extension="2001", caller=None, to="+33145678901", category="x",
                        billing="included", direction="outbound", call_id="c-12", setup_ms=1)
    ksr = FakeKSR("INVITE", src="127.0.0.2", sport=5060)
    ksr.vars[Var.RECORD] = records.encode(rec)
    world.router(ksr).ksr_dialog_event(None, "dialog:start")
    assert ksr.vars[Var.CALLEE] == "udp:127.0.0.2:5060"


def test_a_failed_dialog_settles_nothing_answered(world: World):
    rec = records.start(company="acme", extension="2001", caller=None, to="+4915112345678", category="x",
                        billing="prepaid", direction="outbound", call_id="c-10", setup_ms=1, prepaid=True,
                        max_secs=60)
    rec["reservation"] = "r-10"
    dialog_event(world, "dialog:failed", rec)
    assert world.ledger.settled == [("r-10", 0)] and world.ledger.records[0]["disposition"] == "unanswered"


DIALOG = {"callid": "c-20", "from_tag": "ft", "to_tag": "tt", "from_uri": "sip:2001@acme.test",
          "to_uri": "sip:+4915112345678@acme.test", "from_contact": "sip:2001@127.0.0.30:5071",
          "from_rs": None, "from_bindaddr": "udp:127.0.0.1:5060"}


def timed_out(world: World, dlg_bye_result: int, caller: str = "udp:127.0.0.30:5071") -> tuple[FakeKSR, dict]:
    rec = records.start(company="acme", extension="2001", caller=None, to="+4915112345678", category="x",
                        billing="prepaid", direction="outbound", call_id="c-20", setup_ms=1, prepaid=True,
                        max_secs=60)
    rec["reservation"] = "r-20"
    ksr = FakeKSR("BYE", call_id="c-20", from_tag="ft", to_tag="tt")
    ksr.known_dialog, ksr.dlg_bye_result = dict(DIALOG), dlg_bye_result
    # answered 59.5 s ago: 60 s once rounded up, however slow the test runs
    ksr.vars.update({Var.RECORD: records.encode(rec), Var.ANSWER_MS: str(records_now() - 59_500),
                     Var.CALLER: caller})
    world.router(ksr).ksr_dialog_event(None, "dialog:timeout")
    return ksr, rec


def records_now() -> int:
    import time
    return int(time.time() * 1000)


def test_at_its_maximum_duration_the_call_is_settled_then_cut_callee_first(world: World):
    ksr, _ = timed_out(world, 1)
    assert world.ledger.settled == [("r-20", 60)] and world.ledger.records[0]["disposition"] == "cut-at-max-duration"
    assert ksr.dialog_byes == ["callee", "caller"] and ksr.uac_sent == []
    # the BYEs' own dialog:end then finds the call finished: nothing is settled twice
    world.router(ksr).ksr_dialog_event(None, "dialog:end")
    assert len(world.ledger.settled) == 1


def test_a_caller_behind_a_nat_gets_the_bye_through_its_binding_not_at_its_contact(world: World):
    ksr, _ = timed_out(world, 1, caller="udp:198.51.100.2:24012")
    assert ksr.dialog_byes == ["callee"]  # dlg_bye would send to sip:2001@127.0.0.30:5071, its Contact
    ((method, ruri, socket, _),) = ksr.uac_sent
    assert (method, ruri) == ("BYE", "sip:2001@127.0.0.30:5071")
    assert ksr.uac_next_hops == ["sip:198.51.100.2:24012;transport=udp"]


def test_when_the_dialog_is_gone_the_caller_gets_a_bye_built_from_the_dialog(world: World):
    ksr, _ = timed_out(world, -1)
    ((method, ruri, socket, headers),) = ksr.uac_sent
    assert (method, ruri, socket) == ("BYE", "sip:2001@127.0.0.30:5071", "udp:127.0.0.1:5060")
    assert "From: <sip:+4915112345678@acme.test>;tag=tt\r\nTo: <sip:2001@acme.test>;tag=ft\r\n" in headers


def test_on_tcp_or_tls_a_phone_is_remembered_by_its_connection_a_peer_by_its_address(world: World):
    rec = records.start(company="acme", extension="2001", caller=None, to="+33145678901", category="x",
                        billing="included", direction="outbound", call_id="c-13", setup_ms=1)
    peer = next(iter(world.directory.peer_addresses()))
    cases = [("127.0.0.61", 40000, {}, "tls:127.0.0.61:40000#17"),           # a phone answered
             ("127.0.0.61", 40000, {Var.CALLEE_CARRIER: "1"}, "tls:127.0.0.61:40000"),  # a carrier
             (peer[0], 41000, {}, f"tls:{peer[0]}:41000")]                   # a trunk or media server's address
    for ip, port, marks, expected in cases:
        ksr = FakeKSR("INVITE", src=ip, sport=port, transport="tls")
        ksr.request["$conid"] = "17"
        ksr.vars.update({Var.RECORD: records.encode(rec), **marks})
        world.router(ksr).ksr_dialog_event(None, "dialog:start")
        assert ksr.vars[Var.CALLEE] == expected, marks
