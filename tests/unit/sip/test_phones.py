"""phones: digest authentication, registration, ringing an extension (fake KSR)."""

import pytest

from kemi.model import digest_ha1
from kemi.store import StoreUnavailable
from kemi.sip.shell import Route, Table, Var
from tests.fake_ksr import FakeKSR
from tests.unit.sip.conftest import PASSWORD, World


def register(user="2001", domain="acme.test", credentials=True, ha1=None) -> FakeKSR:
    ksr = FakeKSR("REGISTER", f"sip:{domain}", from_uri=f"sip:{user}@{domain}", auth_user=user)
    if credentials:
        ksr.credentials_realm = domain
        ksr.good_ha1 = ha1 or digest_ha1(user, domain, PASSWORD)
    return ksr


def test_register_without_credentials_is_challenged_in_the_company_realm(world: World):
    ksr = world.request(register(credentials=False))
    assert ksr.challenges == [("acme.test", 1)]
    assert ksr.saved == []


def test_an_unknown_domain_is_challenged_as_a_known_one_and_its_credentials_refused_as_a_wrong_password(
        world: World):
    """Were an unknown domain refused at once, its 403 against a known domain's 401 would list our companies."""
    known, unknown = world.request(register(credentials=False)), world.request(register(domain="evil.test",
                                                                                         credentials=False))
    assert known.replies == unknown.replies == [(401, "Unauthorized")] and known.saved == unknown.saved == []
    assert known.challenges == [("acme.test", 1)] and unknown.challenges == [("evil.test", 1)]
    wrong = register()
    wrong.good_ha1 = "0" * 32
    guessed = world.request(register(domain="evil.test"))
    assert world.request(wrong).reply == guessed.reply == (403, "Forbidden") and guessed.saved == []
    assert any("no phone extension '2001' at 'evil.test'" in line for line in guessed.logged("notice"))


def test_wrong_password_and_unknown_user_get_the_same_403(world: World):
    wrong = register()
    wrong.good_ha1 = "0" * 32
    unknown = world.request(register(user="2999"))
    assert world.request(wrong).reply == unknown.reply == (403, "Forbidden")
    assert wrong.saved == unknown.saved == []
    assert wrong.digest_checks and not unknown.digest_checks  # no HA1 to check against


def test_stale_nonce_gets_a_new_challenge_not_a_refusal(world: World):
    ksr = register()
    ksr.auth_result = -4
    world.request(ksr)
    assert ksr.challenges == [("acme.test", 1 | 16)] and ksr.saved == []


def test_good_register_is_saved_and_remembered_for_emergencies(world: World):
    ksr = world.request(register())
    assert ksr.saved and ksr.replies == []  # the registrar answers 200 itself
    assert ksr.htables[Table.EMERGENCY_IDS]["2001@acme.test"] == \
        f"{digest_ha1('2001', 'acme.test', PASSWORD)}\t+33142685301\t12 rue de la Paix, Paris\tacme"
    assert ksr.htables[Table.ROUTES][Table.EMERGENCY_TRUNKS_KEY] == "emergency@udp:127.0.0.5:5060"


def test_internal_call_rings_every_contact_of_the_callee_in_the_own_company(world: World):
    ksr = world.phone_invite("2002")
    ksr.registered["sip:2002@acme.test"] = 1
    world.request(ksr)
    assert ksr.lookups == ["sip:2002@acme.test"]
    relay = ksr.relay
    assert relay.timers == (30000, 5000) and relay.failure_route is None
    assert ksr.dialog_managed == 1 and ksr.record_routed == 1 and ksr.consumed
    assert '"category":"internal"' in ksr.vars[Var.RECORD]


def test_unregistered_callee_gets_480_and_a_record(world: World):
    ksr = world.request(world.phone_invite("2002"))
    assert ksr.reply == (480, "Extension Not Registered") and ksr.relays == []
    (record,) = world.ledger.records
    assert record["disposition"] == "refused-480" and record["to"] == "2002"


def test_missing_extension_gets_404(world: World):
    ksr = world.request(world.phone_invite("2003"))
    assert ksr.reply == (404, "Extension Not Found") and ksr.lookups == []


def test_another_companys_extension_is_looked_up_in_the_callers_company_only(world: World):
    ksr = world.phone_invite("2001", user="2001", domain="globex.test")
    ksr.registered["sip:2001@acme.test"] = 1  # acme's 2001 is registered, globex's is not
    world.request(ksr)
    assert ksr.lookups == ["sip:2001@globex.test"] and ksr.reply == (480, "Extension Not Registered")


# -- registrations point where the phone really is -------------------------------------------------------
PHONE = ("127.0.0.30", 5071)


def register_from(contact: str | None, src=PHONE, expires: str | None = "300", transport="udp") -> FakeKSR:
    headers = ([("Contact", contact)] if contact is not None else []) + ([("Expires", expires)] if expires else [])
    ksr = FakeKSR("REGISTER", "sip:acme.test", src=src[0], sport=src[1], from_uri="sip:2001@acme.test",
                  auth_user="2001", headers=headers, transport=transport)
    ksr.credentials_realm = "acme.test"
    ksr.good_ha1 = digest_ha1("2001", "acme.test", PASSWORD)
    return ksr


def test_register_is_handled_statefully_and_a_retransmission_is_left_to_tm(world: World):
    ksr = world.request(register_from("<sip:2001@127.0.0.30:5071>"))
    assert ksr.new_transactions == 1 and ksr.saved
    again = register_from("<sip:2001@127.0.0.30:5071>")
    again.newtran_result = 0  # tm found the transaction and answered it again
    world.request(again)
    assert again.saved == [] and again.replies == [] and again.digest_checks == []


def test_a_contact_at_the_source_is_saved_and_the_address_remembered_for_its_expiry(world: World):
    ksr = world.request(register_from("<sip:2001@127.0.0.30:5071;transport=udp>;expires=120"))
    assert ksr.saved and ksr.replies == []
    assert ksr.htables[Table.REGISTERED] == {"127.0.0.30:5071": "2001@acme.test"}  # which phone is there
    assert ksr.expiries[Table.REGISTERED]["127.0.0.30:5071"] == ksr.now + 120
    # the registrar answers once, after the address is remembered: a 112 dialled the moment the
    # 200 arrives finds it registered
    assert ksr.save_flags == 0x02
    (answer,) = ksr.register_answers
    assert answer[Table.REGISTERED] == {"127.0.0.30:5071": "2001@acme.test"}


@pytest.mark.parametrize("contact", [
    "<sip:v0@127.0.1.99:5099>, <sip:v1@127.0.1.99:5099>",  # a victim
    "<sip:2001@127.0.0.30:5071>, <sip:x@127.0.0.2:5060>",  # its own, and a trunk
    "<sip:2001@127.0.0.30:5072>",
    "<sip:2001@127.0.0.30:5071;transport=tcp>",
])
def test_a_contact_elsewhere_than_the_source_is_refused_and_nothing_is_saved(world: World, contact):
    ksr = world.request(register_from(contact))
    assert ksr.reply == (403, "Contact Must Be The Registering Address") and ksr.saved == []
    assert Table.REGISTERED not in ksr.htables
    assert contact in ksr.logged("notice")[0]


def test_a_tcp_phone_registers_its_connection(world: World):
    ksr = world.request(register_from("<sip:2001@127.0.0.30:5071;transport=tcp>", transport="tcp"))
    assert ksr.saved


def test_star_removes_everything_only_with_expires_0(world: World):
    ksr = register_from("*", expires="0")
    ksr.htables[Table.REGISTERED] = {"127.0.0.30:5071": 1}
    world.request(ksr)
    assert ksr.saved and ksr.htables[Table.REGISTERED] == {}
    refused = world.request(register_from("*", expires="300"))
    assert refused.reply == (400, "Contact * Needs Expires 0") and refused.saved == []


def test_a_query_without_contact_is_answered_by_the_registrar_and_remembers_nothing(world: World):
    ksr = world.request(register_from(None, expires=None))
    assert ksr.saved and Table.REGISTERED not in ksr.htables and len(ksr.register_answers) == 1


def test_a_contact_header_the_proxy_cannot_read_whole_is_refused(world: World):
    ksr = register_from("<sip:2001@127.0.0.30:5071>")
    ksr.vars["$(hdr(Contact)[*])"] = None  # Kamailio's pv buffer was too small for it
    assert world.request(ksr).reply == (400, "Unreadable Contact") and ksr.saved == []


def test_a_register_from_a_trusted_peer_or_the_proxy_is_refused(world: World):
    trunk = world.request(register_from("<sip:2001@127.0.0.2:5060>", src=("127.0.0.2", 5060)))
    assert trunk.reply == (403, "Contact Names A Trusted Peer") and trunk.saved == []
    proxy = world.request(register_from("<sip:2001@127.0.0.1:5060>", src=("127.0.0.1", 5060)))
    assert proxy.reply == (403, "Contact Names This Proxy") and proxy.saved == []


def test_a_register_the_registrar_refuses_is_answered_by_the_registrar_only(world: World):
    ksr = register_from("<sip:2001@127.0.0.30:5071>")
    ksr.save_result = -2  # e.g. more than max_contacts: the registrar has sent its 503
    world.request(ksr)
    assert ksr.replies == [] and Table.REGISTERED not in ksr.htables
    assert len(ksr.register_answers) == 1  # the registrar's own error answer


# -- ringing: never a trusted peer or the proxy itself ----------------------------------------------------
def ring_2002(bindings: list[str]) -> FakeKSR:
    ksr = World.phone_invite("2002")
    ksr.registered["sip:2002@acme.test"] = 1
    ksr.bindings["sip:2002@acme.test"] = bindings
    return ksr


def test_every_registered_phone_rings(world: World):
    ksr = world.request(ring_2002(["sip:2002@127.0.0.30:5071", "sip:2002@127.0.0.31:5071"]))
    assert ksr.relay.ruri == "sip:2002@127.0.0.30:5071" and [b["uri"] for b in ksr.branches] == \
        ["sip:2002@127.0.0.31:5071"]
    assert ksr.dropped_branches == [] and world.directory.peer_reads == 1  # one round trip, at most


def test_a_stale_contact_at_a_trusted_peer_is_not_rung_and_is_logged(world: World):
    ksr = world.request(ring_2002(["sip:2002@127.0.0.30:5071", "sip:x@127.0.0.2:5060", "sip:y@127.0.0.1:5060"]))
    assert ksr.relay.ruri == "sip:2002@127.0.0.30:5071" and ksr.branches == []
    assert ksr.dropped_branches == ["sip:y@127.0.0.1:5060", "sip:x@127.0.0.2:5060"]
    warnings = ksr.logged("warn")
    assert any("127.0.0.2:5060" in w and "trusted peer" in w for w in warnings)
    assert any("127.0.0.1:5060" in w and "this proxy" in w for w in warnings)


def test_a_refused_first_contact_gives_its_place_to_the_next(world: World):
    ksr = world.request(ring_2002(["sip:x@127.0.0.3:5060", "sip:2002@127.0.0.31:5071"]))
    assert ksr.relay.ruri == "sip:2002@127.0.0.31:5071" and ksr.branches == []


def test_an_extension_whose_every_contact_is_refused_is_not_registered(world: World):
    ksr = world.request(ring_2002(["sip:x@127.0.0.2:5060", "sip:y@127.0.0.4:5060"]))
    assert ksr.reply == (480, "Extension Not Registered") and ksr.relays == []


def test_when_the_peers_cannot_be_read_only_the_proxy_itself_is_refused(world: World):
    def unreachable():
        raise StoreUnavailable("Redis at redis://test unreachable")

    world.directory.peer_addresses = unreachable
    ksr = world.request(ring_2002(["sip:x@127.0.0.2:5060", "sip:y@127.0.0.1:5060"]))
    assert ksr.relay.ruri == "sip:x@127.0.0.2:5060" and ksr.dropped_branches == ["sip:y@127.0.0.1:5060"]


def test_a_tls_phone_is_saved_with_its_connection_as_received(world: World):
    ksr = world.request(register_from("<sip:2001-0x55d1@192.168.1.20:5061;transport=tls>", src=("203.0.113.7", 40312),
                                      transport="tls"))
    assert ksr.saved and ksr.replies == []
    assert ksr.vars[Var.RECEIVED] == "sip:203.0.113.7:40312;transport=tls"


def test_a_tls_register_whose_contact_does_not_ask_for_tls_is_refused(world: World):
    ksr = world.request(register_from("<sip:2001@203.0.113.7:40312>", src=("203.0.113.7", 40312), transport="tls"))
    assert ksr.reply == (403, "Contact Must Use TLS") and ksr.saved == [] and Var.RECEIVED not in ksr.vars


def test_udp_and_tcp_phones_get_no_received(world: World):
    for transport in ("udp", "tcp"):
        ksr = world.request(register_from(f"<sip:2001@127.0.0.30:5071;transport={transport}>", transport=transport))
        assert ksr.saved and Var.RECEIVED not in ksr.vars


def test_phones_on_tls_are_rung_only_over_open_connections(world: World):
    ksr = world.request(ring_2002(["sip:2002@127.0.0.30:40312;transport=tls"]))
    assert ksr.relay.ruri == "sip:2002@127.0.0.30:40312;transport=tls"
    # per branch (tm restores the request's send flags after a branch route), never on the request
    assert ksr.relay.branch_route == Route.BRANCH_PHONE and not ksr.no_connect
    world.router(ksr).ksr_branch_phone(None)
    assert ksr.no_connect


@pytest.mark.parametrize("bindings", [["sip:2002@127.0.0.30:5071;transport=tcp"],
                                      ["sip:2002@127.0.0.30:40312;transport=tls", "sip:2002@127.0.0.31:5071"]])
def test_phones_not_all_on_tls_may_be_connected_to(world: World, bindings):
    ksr = world.request(ring_2002(bindings))
    assert not ksr.no_connect and ksr.relays and ksr.relay.branch_route is None


def test_a_phone_whose_connection_is_gone_gets_480_not_connected(world: World):
    ksr = ring_2002(["sip:2002@127.0.0.30:40312;transport=tls"])
    ksr.relay_result = -1  # tm could send on no branch: no open connection to the phone
    world.request(ksr)
    assert ksr.reply == (480, "Extension Not Connected") and ksr.relays == []
