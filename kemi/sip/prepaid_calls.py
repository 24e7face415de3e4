"""Calls paid from the company's Prepaid Account: rating, reservation, the balance
announcement, and the renewal and settlement of the reservation.

The money itself moves only in the ledger's Redis Functions (kemi.store.prepaid);
here a call is rated, its longest affordable duration reserved before it rings, and
the reservation settled when its dialog ends.
"""

from __future__ import annotations

import uuid

from kemi import routing
from kemi.model import Company, MediaServer
from kemi.numbering import Decision
from kemi.settings import Settings
from kemi.sip.calls import Calls, Ledgers
from kemi.sip.shell import Route, Sip
from kemi.sip.trunks import Trunks
from kemi.store.prepaid import PrepaidError, Reservation


class PrepaidCalls:
    def __init__(self, sip: Sip, settings: Settings, ledger: Ledgers, calls: Calls, trunks: Trunks):
        self.sip = sip
        self.ledger = ledger
        self.settings = settings
        self.calls = calls
        self.trunks = trunks

    def reserve(self, company: Company, decision: Decision, rec: dict) -> Reservation | None:
        """Hold the price of the longest call the account pays for; None when refused (and answered)."""
        target = decision.e164 or decision.dialled
        ledger = self.ledger()
        rate = ledger.rate_for(routing.rating_number(decision))
        try:
            if rate is None:
                # "not activated" is the answer that tells the caller what to do, so it comes first
                active = ledger.status(company.id).active
                raise PrepaidError("NO_RATE" if active else "NOT_ACTIVE", f"no rate for {target}")
            cap = self.settings.prepaid_max_call_s
            ttl = (self.settings.prepaid_setup_s + cap + self.settings.prepaid_ttl_margin_s) * 1000
            # Money is keyed by an id the proxy mints for this call, never by the caller's
            # Call-ID: a reused Call-ID is a new call with a new reservation.
            key = uuid.uuid4().hex
            held = ledger.reserve(company.id, key, rate, cap_secs=cap, ttl_ms=ttl,
                                  ext=rec["extension"], to=target, meta={"call_id": rec["call_id"]})
        except PrepaidError as exc:
            # the caller's account says no: info; the ledger itself says it is broken: ops must look
            level = "info" if exc.code in ("NOT_ACTIVE", "NO_RATE", "INSUFFICIENT_FUNDS") else "err"
            self.calls.refuse(routing.prepaid_refusal(exc.code), rec,
                              detail=f"prepaid call of {company.id}/{rec['extension']} to {target}: {exc}", level=level)
            return None
        rec.update(prepaid=True, max_secs=held.max_secs, reservation=key)
        return held

    def announce(self, company: Company, held: Reservation, media: tuple[MediaServer, ...]) -> bool:
        """The caller hears the balance first; the trunks are dialled when the announcement ends
        (announcement_done). False when no announcement server is provisioned."""
        announcer = next((m for m in media if m.role == "announcement"), None)
        if announcer is None:
            return False
        headers = routing.media_headers(company.id, None) + routing.balance_headers(held.available_before,
                                                                                    held.currency)
        self.calls.to_media_server(announcer, "announce", headers, Route.FAILURE_ANNOUNCEMENT)
        return True

    def announcement_done(self) -> None:
        """Failure route of the announcement branch (it ends the branch with X-Announcement: done)."""
        if self.sip.reply_header("X-Announcement") != "done":
            self.sip.log("warn", f"announcement server answered {self.sip.status_code()} for call-id "
                                 f"{self.sip.call_id}: connecting without the balance announcement")
        self.calls.leave_media()
        self.trunks.relay_next()

    # -- the dialog of a prepaid call ----------------------------------------------------------
    def answered(self, rec: dict) -> bool:
        """Keep the reservation alive for the whole answered call (its maximum duration + margin).

        False when the reservation is gone (expired during a very long set-up): nobody pays
        for this call, so the caller must cut it."""
        ttl = (rec["max_secs"] + self.settings.prepaid_ttl_margin_s) * 1000
        if self.ledger().renew(rec["company"], rec["reservation"], ttl) is None:
            self.sip.log("crit", f"prepaid call {rec['call_id']} of {rec['company']} answered after its reservation "
                                 f"{rec['reservation']} expired: cutting it")
            return False
        return True

    def ended(self, rec: dict, secs: int, final: dict) -> None:
        done = self.ledger().settle(rec["company"], rec["reservation"], secs, final)
        self.sip.log("info", f"prepaid call {rec['call_id']} (reservation {rec['reservation']}) of {rec['company']}: "
                             f"{secs}s, charged {done.cost}, balance {done.balance}")
