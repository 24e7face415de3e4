"""Mid-call requests towards a carrier carry only the in-dialog allow-list (routing.IN_DIALOG_TRUNK_HEADERS),
through the real proxy: asserted on what the trunk RECEIVED, with a control that it did receive the BYE."""

from __future__ import annotations

import re

from tests.sip.rawsip import Peer, Uac, call_id, header, headers, status

PRIMARY = ("127.0.0.2", 5060)
ALICE = ("2001", "acme.test", "alice-secret-1")


def tag(value: str | None) -> str:
    match = re.search(r";tag=([^;>\s]+)", value or "")
    assert match, value
    return match.group(1)


def test_a_phones_bye_reaches_the_carrier_without_its_charging_claims(proxy):
    with Peer(*PRIMARY, answer=(200, "OK"), contact=True) as trunk, Uac(proxy) as alice:
        call = alice.invite(*ALICE, "0612345678")
        assert call.final == (200, "OK"), call.answers
        cid = call_id(call.last_sent)
        assert trunk.wait_for("INVITE", cid)
        ok = [a for a in call.answers if status(a) == (200, "OK")][-1]
        from_tag, to_tag = tag(header(ok, "From")), tag(header(ok, "To"))
        cseq = int(header(call.last_sent, "CSeq").split()[0])
        # the dialog as the phone was given it (RFC 3261 12.1.2): the 200's Contact, its Record-Route reversed
        # (the proxy's Contact and none: topology hiding, kamailio.cfg)
        target = re.search(r"<([^>]+)>", header(ok, "Contact")).group(1)
        route = ", ".join(reversed(re.findall(r"<[^>]+>", ", ".join(headers(ok, "Record-Route")))))
        routes = [f"Route: {route}"] if route else []
        common = dict(from_uri="sip:2001@acme.test", to_uri="sip:0612345678@acme.test", cid=cid, from_tag=from_tag,
                      to_tag=to_tag)
        alice.send(alice.build("ACK", target, cseq=cseq, extra=routes, **common))
        alice.send(alice.build("BYE", target, cseq=cseq + 1, **common, extra=[
            *routes, "P-Charge-Info: <sip:+33144556677@acme.test>", "Reason: Q.850;cause=16",
            "X-Billing-Account: 9999", "Refer-To: <sip:+4915112345678@127.0.0.2>"]))
        got = trunk.wait_for("BYE", cid)
        assert got, "control: the BYE reaches the carrier"
        bye = got[0]
        for name in ("P-Charge-Info", "X-Billing-Account", "Refer-To"):
            assert headers(bye, name) == [], bye
        assert "+33144556677" not in bye and "+4915112345678" not in bye, bye
        assert headers(bye, "Reason") == ["Q.850;cause=16"], bye
