"""The media server's shell: pjsua2 (SIP, RTP, RFC 4733, the conference bridge) around the pure
parts (numwords, prompts, menu). One thread runs PJSIP (mainThreadOnly: every callback arrives in
libHandleEvents, in this loop); speech is rendered by a small thread pool, so that a cache miss
never stalls the calls in progress; /metrics and /health are served by a thread of their own that
only reads counters.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pjsua2 as pj

from kemi.model import COMPANY_ID_RE
from kemi.provisioning import ProvisioningError, parse as parse_provisioning
from media import numwords, prompts as prompts_mod
from media.menu import Menu, Play, Redirect, Stop
from media.settings import Settings
from media.tts import Speech, TtsError, duration_s

# A prompt ends when its player reaches the end of its file (the bridge's clock, which lags the wall clock
# on a loaded machine); its length times SLACK plus a second is only the backstop of a lost end-of-file.
TAIL_S = 0.1  # the last frame, still in the bridge, once the file has been read to its end
SLACK = 2.0
BALANCE_RE = re.compile(r"[0-9]{1,15}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
# A Call-ID or header value as it may be logged: printable, bounded (a hostile one is cut, not echoed)
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def printable(value: str | None, limit: int = 80) -> str:
    return _UNPRINTABLE.sub("?", value or "-")[:limit]


def header(msg: str, name: str) -> str | None:
    """The value of the first `name` header of the INVITE pjsip parsed and accepted (its whole text)."""
    head = msg.split("\r\n\r\n", 1)[0]
    match = re.search(rf"^{name}[ \t]*:[ \t]*([^\r\n]*)", head, re.M | re.I)
    return match.group(1).strip() if match else None


class Metrics:
    def __init__(self, role: str):
        self.role = role
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, str], int] = {}
        self.active = 0
        self.last_loop = time.monotonic()

    def inc(self, name: str, label: str = "") -> None:
        with self.lock:
            self.counters[(name, label)] = self.counters.get((name, label), 0) + 1

    def text(self, speech: Speech) -> str:
        helps = {"media_calls_total": "Calls received, by how they ended",
                 "media_redirects_total": "Receptionist calls sent to an extension, by why",
                 "media_dtmf_digits_total": "RFC 4733 digits received",
                 "media_tts_renders_total": "Sentences rendered by espeak-ng and sox (cache misses)",
                 "media_tts_cache_hits_total": "Sentences found in the speech cache"}
        lines = []
        with self.lock:
            counters = dict(self.counters)
            active = self.active
        for name, label_name in (("media_calls_total", "outcome"), ("media_redirects_total", "why"),
                                 ("media_dtmf_digits_total", None)):
            lines += [f"# HELP {name} {helps[name]}", f"# TYPE {name} counter"]
            rows = [(label, n) for (metric, label), n in sorted(counters.items()) if metric == name]
            for label, n in rows or [("", 0)]:
                labels = f'role="{self.role}"' + (f',{label_name}="{label}"' if label_name and label else "")
                lines.append(f"{name}{{{labels}}} {n}")
        lines += ["# HELP media_calls_active Calls in progress", "# TYPE media_calls_active gauge",
                  f'media_calls_active{{role="{self.role}"}} {active}']
        for name, value in (("media_tts_renders_total", speech.misses), ("media_tts_cache_hits_total", speech.hits)):
            lines += [f"# HELP {name} {helps[name]}", f"# TYPE {name} counter", f'{name}{{role="{self.role}"}} {value}']
        return "\n".join(lines) + "\n"


class Player(pj.AudioMediaPlayer):
    """A player that says when it has played its file(s) to the end (called in the media clock's
    thread: it only sets a flag the server's loop reads)."""

    def __init__(self):
        super().__init__()
        self.ended_at: float | None = None

    def onEof2(self):
        if self.ended_at is None:
            self.ended_at = time.monotonic()


class MediaCall(pj.Call):
    """One caller. Everything here runs in the server's loop."""

    def __init__(self, server: "Server", acc, call_id: int, sip_callid: str):
        super().__init__(acc, call_id)
        self.slot = call_id  # pjsua's call id, kept: getId() may no longer give it once disconnected
        self.server = server
        self.callid = sip_callid
        self.media_up = False
        self.player: pj.AudioMediaPlayer | None = None
        self.prompt_end: float | None = None
        self.pending: concurrent.futures.Future | None = None  # speech being rendered
        self.pending_then = None  # what to do once it is ready
        self.menu: Menu | None = None
        self.company = None
        self.outcome = "hung-up"
        self.ended = False
        self.playing_then: Redirect | None = None

    # -- pjsua2 callbacks ------------------------------------------------------------------
    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.stop_prompt()
            self.ended = True
            self.server.finished(self, info.lastStatusCode)

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_up = True
                self.server.media_ready(self)
                return

    def onDtmfDigit(self, prm):
        self.server.digit(self, prm.digit)

    # -- helpers ---------------------------------------------------------------------------
    def audio(self) -> pj.AudioMedia:
        return self.getAudioMedia(-1)

    def play(self, paths: list[Path], seconds: float) -> None:
        self.stop_prompt()
        player = Player()
        if len(paths) == 1:
            player.createPlayer(str(paths[0]), pj.PJMEDIA_FILE_NO_LOOP)
        else:
            player.createPlaylist([str(p) for p in paths], "prompt", pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(self.audio())
        self.player = player
        self.prompt_end = time.monotonic() + SLACK * seconds + 1.0

    def stop_prompt(self) -> None:
        self.prompt_end = None
        if self.player is not None:
            try:
                self.player.stopTransmit(self.audio())
            except pj.Error:
                pass  # the call's media is already gone
            self.server.retired.append(self.player)  # destroyed outside any callback
            self.player = None

    def end(self, code: int, reason: str, headers: dict[str, str]) -> None:
        op = pj.CallOpParam()
        op.statusCode = code
        op.reason = reason
        for name, value in headers.items():
            h = pj.SipHeader()
            h.hName, h.hValue = name, value
            op.txOption.headers.append(h)
        self.stop_prompt()
        try:
            self.hangup(op)
        except pj.Error as exc:
            self.server.log(self.callid, "end-failed", code=code, error=printable(exc.info(), 200))


class Account(pj.Account):
    def __init__(self, server: "Server"):
        super().__init__()
        self.server = server

    def onIncomingCall(self, prm):
        self.server.incoming(self, prm)


class Server:
    def __init__(self, settings: Settings):
        self.s = settings
        self.metrics = Metrics(settings.role)
        self.speech = Speech(settings.cache_dir, settings.clock_rate)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts")
        self.calls: dict[int, MediaCall] = {}
        self.retired: list = []
        self.running = True
        self.reload_wanted = False
        self.companies = {}
        self.prompts = None
        self.load_files()

    # -- configuration ---------------------------------------------------------------------
    def load_files(self) -> None:
        """The provisioning file's companies and the prompts; on a reload (SIGHUP) a broken file
        keeps the previous ones and says why."""
        try:
            text = self.s.provision_file.read_text(encoding="utf-8")
            companies = {c.id: c for c in parse_provisioning(text, str(self.s.provision_file)).companies}
            prompts = prompts_mod.parse(self.s.prompts_file.read_text(encoding="utf-8"), str(self.s.prompts_file))
        except (OSError, UnicodeDecodeError, ProvisioningError, prompts_mod.PromptsError) as exc:
            if self.prompts is None:
                raise
            self.log("-", "reload-refused", reason=printable(str(exc).replace("\n", "; "), 400))
            return
        self.companies, self.prompts = companies, prompts
        self.log("-", "loaded", companies=len(companies), provisioning=self.s.provision_file,
                 prompts=self.s.prompts_file)

    def log(self, callid: str, event: str, **fields) -> None:
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        print(f"media[{self.s.role}]: call={callid} {event}{' ' + extra if extra else ''}", file=sys.stderr, flush=True)

    # -- the endpoint ----------------------------------------------------------------------
    def start(self) -> None:
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        # pjsua2-python's wheel is built with PJSUA_MAX_CALLS 4: more is silently held to 4, and
        # PJSIP itself answers 486 Busy Here to a fifth caller (BENCHMARKS.md, "Media server")
        cfg.uaConfig.maxCalls = self.s.max_calls
        cfg.uaConfig.userAgent = "cowork-media"
        cfg.logConfig.level = self.s.log_level
        cfg.logConfig.consoleLevel = self.s.log_level
        cfg.medConfig.clockRate = self.s.clock_rate
        cfg.medConfig.sndClockRate = self.s.clock_rate
        cfg.medConfig.channelCount = 1
        cfg.medConfig.ecTailLen = 0  # nothing to cancel: the server only plays and listens for RFC 4733
        cfg.medConfig.noVad = True   # a steady RTP stream: silence suppression would read as lost audio
        cfg.medConfig.maxMediaPorts = 2 * self.s.max_calls + 8  # per call: its stream and its player
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        # G.711 (A-law first: French carriers), G.722 when offered; nothing else is worth an RTP relay's hop
        for codec in ep.codecEnum2():
            name = codec.codecId.split("/")[0]
            ep.codecSetPriority(codec.codecId, {"PCMA": 250, "PCMU": 240, "G722": 230}.get(name, 0))
        tc = pj.TransportConfig()
        tc.boundAddress = self.s.sip_addr
        tc.port = self.s.sip_port
        kind = pj.PJSIP_TRANSPORT_UDP if self.s.transport == "udp" else pj.PJSIP_TRANSPORT_TCP
        ep.transportCreate(kind, tc)
        ep.libStart()
        ac = pj.AccountConfig()
        ac.idUri = f"sip:{self.s.role}@{self.s.sip_addr}:{self.s.sip_port}"
        ac.mediaConfig.transportConfig.boundAddress = self.s.sip_addr
        ac.mediaConfig.transportConfig.port = self.s.rtp_port_min
        ac.mediaConfig.transportConfig.portRange = self.s.rtp_port_max - self.s.rtp_port_min
        ac.callConfig.timerUse = pj.PJSUA_SIP_TIMER_INACTIVE
        ac.callConfig.prackUse = pj.PJSUA_100REL_NOT_USED
        self.account = Account(self)
        self.account.create(ac, True)
        if self.s.http_port:
            self.http = ThreadingHTTPServer((self.s.http_addr, self.s.http_port), _handler(self))
            threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.log("-", "started", sip=f"{self.s.transport}:{self.s.sip_addr}:{self.s.sip_port}",
                 rtp=f"{self.s.rtp_port_min}-{self.s.rtp_port_max}",
                 http=f"{self.s.http_addr}:{self.s.http_port}" if self.s.http_port else "off")

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_wanted", True))
        while self.running:
            self.ep.libHandleEvents(10)
            now = time.monotonic()
            self.metrics.last_loop = now
            if self.reload_wanted:
                self.reload_wanted = False
                self.load_files()
            for call in list(self.calls.values()):
                self.step(call, now)
            if self.retired:
                self.retired.clear()  # players of ended prompts, garbage outside any callback
        self.log("-", "stopping", calls=len(self.calls))
        self.ep.hangupAllCalls()
        end = time.monotonic() + 2
        while self.calls and time.monotonic() < end:
            self.ep.libHandleEvents(20)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.log("-", "stopped", calls=len(self.calls))
        # Out without pjsua's teardown: the wheel's pjsua2 aborts the process when a Call object is
        # finalised after libDestroy (its call_id assertion), and the kernel closes every socket.
        sys.stderr.flush()
        os._exit(0)

    # -- calls -----------------------------------------------------------------------------
    def incoming(self, acc, prm) -> None:
        msg = prm.rdata.wholeMsg
        sip_callid = printable(header(msg, "Call-ID") or header(msg, "i"))
        call = MediaCall(self, acc, prm.callId, sip_callid)
        self.calls[prm.callId] = call
        self.metrics.active = len(self.calls)
        source = prm.rdata.srcAddress.rsplit(":", 1)[0].strip("[]")
        if source not in self.s.proxies:
            # only the proxy sends us calls: anything else is a stranger using our media and CPU
            self.log(sip_callid, "refused", source=printable(prm.rdata.srcAddress), why="not-a-proxy")
            return self.refuse(call, 403, "Calls Come Through The Proxy Only", "stranger")
        company_id = header(msg, "X-Company")
        company = self.companies.get(company_id) if company_id and COMPANY_ID_RE.fullmatch(company_id) else None
        call.company = company
        if self.s.role == "announcement":
            self.announce(call, msg, company, company_id)
        else:
            self.receive(call, msg, company, company_id)

    def refuse(self, call: MediaCall, code: int, reason: str, outcome: str) -> None:
        call.outcome = outcome
        call.end(code, reason, {})

    def announce(self, call: MediaCall, msg: str, company, company_id) -> None:
        balance, currency = header(msg, "X-Balance"), header(msg, "X-Currency")
        language = company.language if company else self.s.default_language
        if not balance or not BALANCE_RE.fullmatch(balance):
            self.log(call.callid, "refused", why="bad-x-balance", value=printable(balance))
            return self.refuse(call, 400, "Missing Or Bad X-Balance", "bad-request")
        if not currency or currency not in numwords.CURRENCIES:
            self.log(call.callid, "refused", why="unknown-x-currency", value=printable(currency))
            return self.refuse(call, 400, "Unknown X-Currency", "bad-request")
        text = self.prompts.say(language, "balance", amount=numwords.amount(int(balance), currency, language))
        self.log(call.callid, "announce", company=printable(company_id), balance=balance, currency=currency,
                 language=language)
        call.pending = self.pool.submit(self.render, [("text", text, language)])
        call.pending_then = None

    def receive(self, call: MediaCall, msg: str, company, company_id) -> None:
        if company is None:
            self.log(call.callid, "refused", why="unknown-company", company=printable(company_id))
            return self.refuse(call, 404, "Company Not Found", "unknown-company")
        phones = [e.number for e in company.extensions]
        operator = company.operator or (phones[0] if phones else None)
        if operator is None:
            self.log(call.callid, "refused", why="company-without-extensions", company=company.id)
            return self.refuse(call, 480, "No Extension To Reach", "no-extension")
        call.menu = Menu(frozenset(phones), operator, self.s.silence_s, self.s.digit_gap_s, self.s.tries)
        self.log(call.callid, "receive", company=company.id, did=printable(header(msg, "X-DID")),
                 language=company.language, operator=operator)
        self.act(call, call.menu.start(time.monotonic()))

    def media_ready(self, call: MediaCall) -> None:
        if call.pending_then is not None and call.pending is None:
            paths, seconds = call.pending_then
            call.pending_then = None
            call.play(paths, seconds)

    def step(self, call: MediaCall, now: float) -> None:
        if call.ended:
            return
        if call.pending is not None and call.pending.done():
            future, call.pending = call.pending, None
            try:
                paths, seconds = future.result()
            except (TtsError, OSError) as exc:
                self.log(call.callid, "speech-failed", error=printable(str(exc), 300))
                if self.s.role == "announcement":
                    # the contract: anything but 480 + done, and the proxy connects without the announcement
                    return self.refuse(call, 500, "Announcement Unavailable", "speech-failed")
                return self.redirect(call, Redirect(call.menu.operator, "speech-failed"))
            if call.getInfo().state < pj.PJSIP_INV_STATE_EARLY:
                op = pj.CallOpParam()
                op.statusCode = 183
                call.answer(op)  # early media: the greeting or the balance, no answer, nothing billed
            if call.media_up:
                call.play(paths, seconds)
            else:
                call.pending_then = (paths, seconds)
            return
        played = call.player is not None and call.player.ended_at is not None and now >= call.player.ended_at + TAIL_S
        if call.prompt_end is not None and (played or now >= call.prompt_end):
            call.stop_prompt()
            if self.s.role == "announcement":
                call.outcome = "announced"
                self.log(call.callid, "announced")
                return call.end(480, "Announcement Complete", {"X-Announcement": "done"})
            self.act(call, call.menu.prompt_done(now))
            return
        if call.menu is not None and call.pending is None and call.prompt_end is None:
            self.act(call, call.menu.tick(now))

    def digit(self, call: MediaCall, digit: str) -> None:
        self.metrics.inc("media_dtmf_digits_total")
        if call.menu is None or call.ended:
            return
        self.log(call.callid, "digit", digit=printable(digit, 2))
        self.act(call, call.menu.digit(digit, time.monotonic()))

    def act(self, call: MediaCall, actions: list) -> None:
        for action in actions:
            if isinstance(action, Stop):
                call.stop_prompt()
                if call.pending is not None:
                    call.pending.cancel()
                    call.pending = None
                call.pending_then = None
            elif isinstance(action, Play):
                items = [self.item(call, key, values) for key, values in action.items]
                call.pending = self.pool.submit(self.render, items)
            elif isinstance(action, Redirect):
                self.redirect(call, action)

    def item(self, call: MediaCall, key: str, values: dict):
        company = call.company
        recorded = self.s.recordings_dir / company.id / f"{key}.wav"
        if recorded.is_file():
            return ("wav", recorded, None)
        if key == "greeting" and company.greeting:
            return ("text", company.greeting, company.language)
        if key == "greeting":
            values = {"company": company.name}
        return ("text", self.prompts.say(company.language, key, **values), company.language)

    def render(self, items) -> tuple[list[Path], float]:
        """In the pool: the WAV files of a prompt, and how long they last together."""
        paths = [self.speech.sentence(what, language) if kind == "text" else self.speech.recording(what)
                 for kind, what, language in items]
        return paths, sum(duration_s(p) for p in paths)

    def redirect(self, call: MediaCall, where: Redirect) -> None:
        domain = call.company.domain
        self.metrics.inc("media_redirects_total", where.why)
        call.outcome = "redirected"
        self.log(call.callid, "redirect", extension=where.extension, why=where.why)
        # the contract's answer 2: the proxy rings this extension of the same company
        call.end(302, "Moved Temporarily", {"Contact": f"<sip:{where.extension}@{domain}>"})

    def finished(self, call: MediaCall, status: int) -> None:
        self.metrics.inc("media_calls_total", call.outcome)
        self.log(call.callid, "ended", outcome=call.outcome, status=status)
        if call.pending is not None:
            call.pending.cancel()
        self.calls.pop(call.slot, None)
        self.retired.append(call)
        self.metrics.active = len(self.calls)


def _handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                body, code = server.metrics.text(server.speech).encode(), 200
                ctype = "text/plain; version=0.0.4"
            elif self.path == "/health":
                # the PJSIP loop turned within the last 2 s: it reads SIP and runs the timers
                alive = time.monotonic() - server.metrics.last_loop < 2
                body = (b"ok\n" if alive else b"stalled: the SIP loop has not run for 2 s\n")
                code, ctype = (200 if alive else 503), "text/plain"
            else:
                body, code, ctype = b"not found\n", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    return Handler
