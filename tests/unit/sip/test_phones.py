"""phones: digest authentication, registration, ringing an extension (fake KSR)."""

from kemi.model import digest_ha1
from kemi.sip.shell import Table, Var
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


def test_register_for_an_unknown_domain_is_refused_without_a_challenge(world: World):
    ksr = world.request(register(domain="evil.test", credentials=False))
    assert ksr.reply == (403, "Forbidden") and ksr.challenges == []
    assert any("untrusted" in line for line in ksr.logged("notice"))


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
    assert ksr.htables[Table.EMERGENCY_IDS]["2001@acme.test"] == "+33142685301\t12 rue de la Paix, Paris"
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
