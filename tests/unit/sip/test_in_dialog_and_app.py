"""in_dialog and the facade: what every request gets before a role decides (fake KSR)."""

from kemi import records, routing
from kemi.sip.shell import Route, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import World


CALLER, TRUNK = "udp:127.0.0.30:5071", "udp:127.0.0.2:5060"
DIALOG = {"callid": "call-1", "from_tag": "caller-tag", "to_tag": "callee-tag", "state": "4",
          "from_contact": "sip:2001@127.0.0.30:5071", "to_contact": "sip:+33145678901@127.0.0.2:5060"}


def in_dialog(method="BYE", ruri="sip:+33145678901@127.0.0.2:5060", src=("127.0.0.30", 5071),
              tags=("caller-tag", "callee-tag"), dialog=DIALOG, callee=TRUNK) -> FakeKSR:
    ksr = FakeKSR(method, ruri, src=src[0], sport=src[1], from_tag=tags[0], to_tag=tags[1],
                  headers=[("Route", "<sip:127.0.0.1:5060;lr;ftag=caller-tag;did=1.2>")])
    ksr.known_dialog = dict(dialog) if dialog else None
    ksr.vars[Var.CALLER] = CALLER
    if callee:
        ksr.vars[Var.CALLEE] = callee
    ksr.loose_route_result = 1
    return ksr


def test_the_caller_may_hang_up_and_the_bye_goes_where_the_callee_answered_from(world: World):
    ksr = world.request(in_dialog())
    assert ksr.relay.ruri == "sip:+33145678901@127.0.0.2:5060"
    assert ksr.vars["$du"] == "sip:127.0.0.2:5060;transport=udp"
    # the dialog module never sees the BYE: the call ends at the callee's answer
    assert ksr.dialog_held == 1 and ksr.dialog_managed == 0
    assert ksr.armed["on_reply"] == Route.REPLY_BYE and ksr.relay.failure_route == Route.FAILURE_BYE


def test_other_requests_go_through_the_dialog_module(world: World):
    for method in ("INVITE", "INFO", "UPDATE", "ACK", "PRACK"):
        ksr = world.request(in_dialog(method=method))
        assert ksr.relay is not None and ksr.dialog_managed == 1 and ksr.dialog_held == 0, method


def test_the_callee_may_hang_up_towards_the_callers_contact(world: World):
    ksr = world.request(in_dialog(ruri="sip:2001@127.0.0.30:5071", src=("127.0.0.2", 5060),
                                  tags=("callee-tag", "caller-tag")))
    assert ksr.relay is not None and ksr.vars["$du"] == "sip:127.0.0.30:5071;transport=udp"


def test_a_request_for_a_dialog_we_do_not_know_is_refused_and_nothing_is_sent(world: World):
    ended = in_dialog()
    ended.vars[Var.FINISHED] = "dialog:end"  # its BYE accepted: the dialog lingers until it expires
    for ksr in (in_dialog(dialog=None), in_dialog(tags=("caller-tag", "guessed")), ended):
        world.request(ksr)
        assert ksr.reply == (481, "Call/Transaction Does Not Exist")
        assert ksr.relays == [] and ksr.dialog_managed == 0 and ksr.dialog_held == 0


def test_a_stranger_with_the_right_tags_is_not_a_party(world: World):
    for src in (("127.0.0.99", 5071), ("127.0.0.30", 5099)):
        ksr = world.request(in_dialog(src=src))
        assert ksr.reply == (403, "Not A Party To This Dialog") and ksr.relays == [] and ksr.dialog_managed == 0


def test_a_forged_request_uri_is_refused_before_the_dialog_sees_the_bye(world: World):
    for ruri in ("sip:void@127.0.0.99:9", "sip:+33145678901@127.0.0.4:5060", "sip:+4915112345678@127.0.0.2:5060"):
        ksr = world.request(in_dialog(ruri=ruri))
        assert ksr.reply == (403, "Request-URI Is Not The Dialog Target"), ruri
        assert ksr.relays == [] and ksr.dialog_managed == 0  # the call goes on, and so does its billing


def test_requests_before_the_answer_are_refused(world: World):
    ksr = world.request(in_dialog(method="INFO", callee=None, dialog={**DIALOG, "to_contact": None}))
    assert ksr.reply == (403, "Dialog Not Answered Yet") and ksr.relays == []


def test_a_route_the_dialog_did_not_record_is_refused(world: World):
    ksr = in_dialog(method="INFO")
    ksr.headers.append(("Route", "<sip:127.0.0.4:5060;lr>"))
    world.request(ksr)
    assert ksr.reply == (403, "Route Is Not The Dialog Route Set") and ksr.relays == []


def test_a_carrier_that_record_routes_keeps_its_route_set(world: World):
    sbc = "<sip:sbc@127.0.0.2:5060;lr>"
    ksr = in_dialog(dialog={**DIALOG, "to_rs": sbc})
    ksr.headers.append(("Route", sbc))
    world.request(ksr)
    assert ksr.relay is not None and ksr.vars["$du"] == "sip:127.0.0.2:5060;transport=udp"
    missing = world.request(in_dialog(dialog={**DIALOG, "to_rs": sbc}))
    assert missing.reply == (403, "Route Is Not The Dialog Route Set")


def test_a_request_that_did_not_come_through_us_is_not_here(world: World):
    ksr = in_dialog()
    ksr.headers = [("Route", "<sip:127.0.0.2:5060;lr>")]
    assert world.request(ksr).reply == (404, "Not Here") and ksr.relays == []


def test_acks_are_never_answered(world: World):
    ack = world.request(in_dialog(method="ACK", dialog=None))
    assert ack.replies == [] and ack.relays == []
    forged = world.request(in_dialog(method="ACK", src=("127.0.0.99", 5071)))
    assert forged.replies == [] and forged.relays == []


def test_a_phone_on_tcp_or_tls_is_its_connection(world: World):
    for transport in ("tcp", "tls"):
        for port, conid, relayed in ((39999, "17", True), (40001, "18", False), (39999, "18", False)):
            ksr = in_dialog(src=("127.0.0.30", port))
            ksr.vars[Var.CALLER] = f"{transport}:127.0.0.30:39999#17"
            ksr.request.update({"$pr": transport, "$conid": conid})
            world.request(ksr)
            assert (ksr.relay is not None) == relayed, (transport, port, conid)
            if not relayed:
                assert ksr.reply == (403, "Not A Party To This Dialog") and ksr.dialog_held == 0


def test_a_trunk_on_tcp_may_send_on_a_connection_of_its_own(world: World):
    ksr = in_dialog(ruri="sip:2001@127.0.0.30:5071", src=("127.0.0.2", 41234), tags=("callee-tag", "caller-tag"),
                    callee="tcp:127.0.0.2:5060")
    ksr.request.update({"$pr": "tcp", "$conid": "5"})
    assert world.request(ksr).relay is not None


def test_our_route_twice_or_an_extra_route_is_refused_before_the_dialog_sees_it(world: World):
    ours = "<sip:127.0.0.1:5060;lr;ftag=caller-tag;did=1.2>"
    for routes in ([ours, ours], [ours, "<sip:127.0.0.20>"], [ours, "<sip:127.0.0.20;lr>"]):
        for method in ("BYE", "INVITE", "INFO"):
            ksr = in_dialog(method=method)
            ksr.headers = [("Route", r) for r in routes]
            world.request(ksr)
            assert ksr.reply == (403, "Route Is Not The Dialog Route Set"), (routes, method)
            assert ksr.relays == [] and ksr.dialog_managed == 0 and ksr.dialog_held == 0


# -- a party's BYE ends the call at the other party's answer ------------------------------------------
PREPAID = records.start(company="acme", extension="2001", caller="+33142685301", to="+4915112345678",
                        category="international", billing="prepaid", direction="outbound", call_id="call-1",
                        setup_ms=1, prepaid=True, max_secs=480)
PREPAID["reservation"] = "r-1"


def answered_bye(status: int) -> FakeKSR:
    """The reply route of the caller's BYE, with the other party's answer; the call was answered 1.5 s ago."""
    import time
    ksr = in_dialog()
    ksr.request["$rs"] = status
    ksr.vars.update({Var.RECORD: records.encode(PREPAID), Var.ANSWER_MS: str(int(time.time() * 1000) - 1500)})
    return ksr


def test_the_call_is_settled_when_the_other_party_accepts_the_bye(world: World):
    for status in (100, 180):
        ksr = answered_bye(status)
        world.router(ksr).ksr_reply_bye(None)
        assert world.ledger.settled == [] and Var.FINISHED not in ksr.vars
    ksr = answered_bye(200)
    world.router(ksr).ksr_reply_bye(None)
    assert world.ledger.settled == [("r-1", 2)] and ksr.vars[Var.FINISHED] == "dialog:end"
    assert ksr.dialog_timeouts == [1] and ksr.dialog_byes == []  # the dialog expires, nobody gets a BYE
    assert ("delete", "") in ksr.media_ops or Var.DLG_MEDIA not in ksr.vars
    # then the dialog times out, and ends: nothing more is settled, no BYE is sent
    router = world.router(ksr)
    router.ksr_dialog_event(None, "dialog:timeout")
    router.ksr_dialog_event(None, "dialog:end")
    assert len(world.ledger.settled) == 1 and ksr.dialog_byes == [] and ksr.uac_sent == []


def test_a_bye_the_other_party_refuses_or_never_answers_has_the_proxy_end_the_call(world: World):
    for code, replied in ((481, True), (420, True), (500, True), (408, False)):
        ksr = answered_bye(0)
        ksr.failure_code, ksr.branch_replied = code, replied
        world.router(ksr).ksr_failure_bye(None)
        assert ksr.dialog_held >= 1 and ksr.dialog_byes == ["callee", "caller"], code
        assert (f"was answered {code}" if replied else "got no answer") in ksr.logged("warn")[0]
    # the settlement is dialog:end's, run by dlg_bye("callee") inside (see the prepaid tests)


def test_a_bye_that_cannot_be_sent_has_the_proxy_end_the_call(world: World):
    ksr = in_dialog()
    ksr.relay_result = -1
    world.request(ksr)
    assert ksr.relays == [] and ksr.dialog_byes == ["callee", "caller"]
    assert "could not be sent" in ksr.logged("warn")[0]


def test_a_failed_bye_of_a_call_already_finished_does_nothing(world: World):
    ksr = answered_bye(0)
    ksr.vars[Var.FINISHED] = "dialog:timeout"  # cut at its maximum meanwhile
    ksr.failure_code, ksr.branch_replied = 481, True
    world.router(ksr).ksr_failure_bye(None)
    assert ksr.dialog_byes == [] and ksr.dialog_held == 0
    late = answered_bye(200)
    late.vars[Var.FINISHED] = "dialog:end"
    world.router(late).ksr_reply_bye(None)
    assert world.ledger.settled == [] and late.dialog_timeouts == []


def test_options_to_the_proxy_is_answered_and_other_methods_get_405_with_allow(world: World):
    assert world.request(FakeKSR("OPTIONS", "sip:127.0.0.1:5060")).reply == (200, "OK")
    ksr = world.request(FakeKSR("MESSAGE", "sip:2002@acme.test"))
    assert ksr.reply == (405, "Method Not Allowed") and ksr.reply_headers[0].startswith("Allow: INVITE")


def test_preloaded_routes_are_dropped_from_initial_requests(world: World):
    ksr = world.request(world.phone_invite("0145678901", headers=[("Route", "<sip:127.0.0.2;lr>")]))
    assert "Route" in ksr.removed_headers


def test_malformed_and_looping_requests_are_stopped_first(world: World):
    insane = FakeKSR("INVITE")
    insane.sane = False
    assert world.request(insane).replies == []  # sanity answered 400 itself
    looping = FakeKSR("INVITE")
    looping.hops = False
    assert world.request(looping).reply == (483, "Too Many Hops")


def test_store_down_is_503_with_retry_after(world: World):
    world.directory.down = True
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.reply == (503, "Subscriber Data Unavailable") and ksr.reply_headers == ["Retry-After: 5"]


def test_a_bug_is_a_500_and_a_traceback_in_the_log_never_silence(world: World):
    world.directory.call_context = None  # not callable: a TypeError inside the route
    ksr = world.request(world.phone_invite("0145678901"))
    assert ksr.reply == (500, "Internal Server Error")
    assert "Traceback" in ksr.logged("err")[0]


def test_dialog_end_of_an_included_call_writes_its_record(world: World):
    rec = records.start(company="acme", extension="2001", caller="+33142685301", to="+33145678901",
                        category="national", billing="included", direction="outbound", call_id="c-1", setup_ms=1)
    ksr = FakeKSR("BYE")
    ksr.vars[Var.RECORD] = records.encode(rec)
    world.router(ksr).ksr_dialog_event(None, "dialog:end")
    (final,) = world.ledger.records
    assert final["disposition"] == "unanswered" and final["cost"] == 0 and world.ledger.settled == []


def test_dialog_events_of_untracked_dialogs_are_ignored(world: World):
    world.router(FakeKSR("BYE")).ksr_dialog_event(None, "dialog:end")
    assert world.ledger.records == []


def test_a_new_call_reusing_a_relayed_call_id_is_refused_but_never_an_emergency_call(world: World):
    first = world.request(world.phone_invite("0145678901", call_id="same"))
    assert first.relay is not None
    again = world.phone_invite("0145678901", call_id="same")
    again.htables = first.htables  # the node's shared memory
    assert world.request(again).reply == (400, "Call-ID Already Used") and again.relays == []
    emergency = world.phone_invite("112", call_id="same")
    emergency.htables = first.htables
    assert world.request(emergency).relay is not None


def test_a_prepaid_call_never_gets_more_time_than_its_deadline(world: World):
    import time
    ksr = in_dialog(method="ACK")
    ksr.vars[Var.DEADLINE_MS] = str(int(time.time() * 1000) + 2900)
    world.request(ksr)
    assert ksr.vars[Var.DLG_TIMEOUT] == 3 and ksr.relay is not None  # 2.9 s left, the timer ticks in whole seconds


# -- mid-call requests towards a carrier -------------------------------------------------------------
FORGED_MID_CALL = [("P-Charge-Info", "<sip:+33144556677@acme.test>"), ("Reason", "Q.850;cause=16"),
                   ("Refer-To", "<sip:+4915112345678@127.0.0.2>")]


def test_a_request_to_a_carrier_inside_the_call_gets_the_in_dialog_allow_list(world: World):
    ksr = in_dialog()
    ksr.headers += FORGED_MID_CALL
    ksr.vars[Var.CALLEE_CARRIER] = "1"
    world.request(ksr)
    assert ksr.relay is not None and ksr.filtered_to(routing.IN_DIALOG_TRUNK_HEADERS)
    assert [h for h in ksr.leaving_headers() if h[0] != "Route"] == [("Reason", "Q.850;cause=16")]


def test_a_carrier_that_called_in_gets_the_allow_list_on_requests_back_to_it(world: World):
    ksr = in_dialog(ruri="sip:+33612345678@127.0.0.2:5060", src=("127.0.0.30", 5071), tags=("callee-tag", "caller-tag"),
                    dialog={**DIALOG, "from_tag": "caller-tag", "from_contact": "sip:+33612345678@127.0.0.2:5060",
                            "to_contact": "sip:2002@127.0.0.30:5071"}, callee=CALLER)
    ksr.vars[Var.CALLER] = TRUNK
    ksr.vars[Var.CALLER_CARRIER] = "1"
    ksr.headers += FORGED_MID_CALL
    world.request(ksr)
    assert ksr.relay is not None and ksr.filtered_to(routing.IN_DIALOG_TRUNK_HEADERS)


def test_requests_to_a_phone_inside_the_call_are_not_filtered(world: World):
    towards_phone = in_dialog(ruri="sip:2001@127.0.0.30:5071", src=("127.0.0.2", 5060), tags=("callee-tag", "caller-tag"))
    towards_phone.vars[Var.CALLEE_CARRIER] = "1"  # the carrier is the callee: this BYE goes to the caller
    unmarked = in_dialog()  # an internal call: nobody is a carrier
    for ksr in (towards_phone, unmarked):
        ksr.headers += FORGED_MID_CALL
        world.request(ksr)
        assert ksr.relay is not None and ksr.header_filters == []
        assert not {name for name, _ in FORGED_MID_CALL} & set(ksr.removed_headers)


def test_dialling_out_and_calling_in_mark_the_carriers_side_of_the_dialog(world: World):
    out = world.request(world.phone_invite("0145678901"))
    assert out.vars[Var.CALLEE_CARRIER] == "1" and Var.CALLER_CARRIER not in out.vars
    inbound = FakeKSR("INVITE", "sip:+33142685302@127.0.0.1", src="127.0.0.2", from_uri="sip:+33612345678@carrier.test")
    inbound.registered["sip:2002@acme.test"] = 1
    world.request(inbound)
    assert inbound.vars[Var.CALLER_CARRIER] == "1" and Var.CALLEE_CARRIER not in inbound.vars


def test_a_caller_on_tcp_or_tls_is_remembered_by_its_connection(world: World):
    for transport in ("tcp", "tls"):
        ksr = world.phone_invite("0145678901", transport=transport, src="127.0.0.61", sport=40000)
        ksr.request["$conid"] = "23"
        world.request(ksr)
        assert ksr.relay is not None and ksr.vars[Var.CALLER] == f"{transport}:127.0.0.61:40000#23"
    udp = world.request(world.phone_invite("0145678901", src="127.0.0.61", sport=40000))
    assert udp.vars[Var.CALLER] == "udp:127.0.0.61:40000"


def test_a_call_id_is_remembered_while_its_call_is_up_then_for_the_grace_only(world: World):
    """kamailio.cfg's callids holds the calls that are up and those ended less than CALL_ID_GRACE_S
    ago (issue 21.5: not a day of calls in shared memory)."""
    first = world.request(world.phone_invite("0145678901", call_id="kept"))
    assert first.relay is not None and first.expiries.get("callids", {}).get("kept") is None  # autoexpire: the cap
    end = FakeKSR("BYE")
    end.htables, end.expiries, end.now = first.htables, first.expiries, 1000.0
    end.vars[Var.RECORD] = first.vars[Var.RECORD]
    world.router(end).ksr_dialog_event(None, "dialog:end")
    assert first.expiries["callids"]["kept"] == 1000.0 + world.settings.call_id_grace_s

    def again(now: float) -> FakeKSR:
        ksr = world.phone_invite("0145678901", call_id="kept")
        ksr.htables, ksr.expiries, ksr.now = first.htables, first.expiries, now
        return world.request(ksr)

    assert again(1000.0 + world.settings.call_id_grace_s - 1).reply == (400, "Call-ID Already Used")
    assert again(1000.0 + world.settings.call_id_grace_s).relay is not None
