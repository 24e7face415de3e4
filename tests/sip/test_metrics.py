"""The Prometheus metrics through the real proxy: what a call, a refusal, a registration and a Redis
outage do to the page Prometheus scrapes (xhttp_prom on the proxy's private metrics socket), the
decision lines of the log, and that neither HTTP on the SIP socket nor SIP on the metrics socket
is served.

The session's proxy is shared by every SIP test file, so each test reads the page before and after
and checks what moved.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

import yaml

from kemi.store.acl import EXPORTER_USER
from tests.conftest import OFFICE, SIP_DB
from tests.harness import (EXPORTER_PASSWORD, ROOT, Proxy, RedisServer, Sipp, admin, free_port, office_file,
                           options_request, send_raw, status_line, wait_for)
from tests.sip.rawsip import Uac
from tests.sip.conftest import BACKUP, EMERGENCY, PRIMARY, Phones, trunk
from tests.sip.test_incoming import call_in
from tests.sip.test_prepaid import GERMAN_MOBILE, Account, announcer

ROUTED = 'kamailio_calls_routed_total{category="%s"}'
REFUSED = 'kamailio_call_refusals_total{reason="%s"}'
FAILED = 'kamailio_calls_failed_total{category="%s"}'
REDIS_ERRORS = 'kamailio_redis_errors_total{kind="%s"}'
ACTIVE_DIALOGS = "kamailio_dialog_active_dialogs"
CONTACTS = "kamailio_usrloc_location_contacts"
IN_FLIGHT = "kamailio_prepaid_reservations_in_flight"


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The series of the proxy's own counters that changed, and by how much."""
    return {name: after[name] - before.get(name, 0) for name in after
            if name.startswith(("kamailio_calls_", "kamailio_call_refusals", "kamailio_redis_errors"))
            and after[name] != before.get(name, 0)}


def call_id_of(messages: str) -> str:
    return re.search(r"^Call-ID: *(\S+)", messages, re.M | re.I).group(1)


def test_every_series_is_on_the_page_from_the_start_and_the_native_statistics_with_them(proxy):
    page = proxy.metrics()
    for category in ("internal", "included", "prepaid", "emergency", "inbound"):
        assert ROUTED % category in page
    for reason in ("premium_blocked", "prepaid_insufficient_funds", "not_registered", "store_down", "other"):
        assert REFUSED % reason in page
    assert FAILED % "emergency" in page and REDIS_ERRORS % "timeout" in page and IN_FLIGHT in page
    # Kamailio's own: requests and replies by code, dialogs, registrations
    for native in ("kamailio_core_rcv_requests_invite", "kamailio_sl_200_replies", "kamailio_tmx_5xx_transactions",
                   ACTIVE_DIALOGS, CONTACTS):
        assert native in page, native


def test_an_internal_call_counts_its_category_its_dialog_while_up_and_the_contacts(phones, proxy):
    before = proxy.metrics()
    bruno = phones.registered(phones.phone("2002"))
    alice = phones.phone("2001")
    assert proxy.metrics()[CONTACTS] == before[CONTACTS] + 1
    answering = phones.answer(bruno)
    call = phones.call(alice, "2002", hold_ms=3000)
    wait_for(lambda: proxy.metrics()[ACTIVE_DIALOGS] >= before[ACTIVE_DIALOGS] + 1, 10, "the call's dialog")
    result = call.wait()
    answering.wait()
    assert result.final == (200, "OK"), result.log + result.stdout
    wait_for(lambda: proxy.metrics()[ACTIVE_DIALOGS] == before[ACTIVE_DIALOGS], 10, "the dialog to end")
    after = proxy.metrics()
    assert moved(before, after) == {ROUTED % "internal": 1}
    assert after["kamailio_core_rcv_requests_invite"] >= before["kamailio_core_rcv_requests_invite"] + 2
    assert after["kamailio_tmx_2xx_transactions"] > before["kamailio_tmx_2xx_transactions"]
    # the decision line, found by the call's Call-ID
    cid = call_id_of(result.messages)
    assert re.search(rf"call {re.escape(cid)} routed internal: acme/2001 to 2002", proxy.log_text())


@pytest.mark.parametrize("dialled, reason", [
    ("0899123456", "premium_blocked"),
    ("004915112345678", "prepaid_not_active"),
    ("06123", "number_incomplete"),
    ("0712345678", "number_invalid"),
])
def test_a_refused_call_counts_its_reason_once_and_logs_it(phones, proxy, dialled, reason):
    before = proxy.metrics()
    result = phones.call(phones.phone("2001"), dialled).wait()
    assert result.final[0] in (403, 404, 484), result.log
    assert moved(before, proxy.metrics()) == {REFUSED % reason: 1}
    line = re.search(rf"call {re.escape(call_id_of(result.messages))} refused {reason}: {result.final[0]} .*",
                     proxy.log_text())
    assert line and "acme/2001" in line.group(0), line  # who called, in the same line


def test_included_inbound_and_emergency_calls_count_their_category(phones, proxy):
    before = proxy.metrics()
    alice = phones.phone("2001")
    carrier = trunk(phones, PRIMARY)
    assert phones.call(alice, "0612345678", hold_ms=100).wait().final == (200, "OK")
    carrier.wait()
    emergency = trunk(phones, EMERGENCY)
    assert phones.call(alice, "112", hold_ms=100).wait().final == (200, "OK")
    emergency.wait()
    bruno = phones.registered(phones.phone("2002"))
    answering = phones.answer(bruno)
    assert call_in(phones, "+33142685302").wait().final == (200, "OK")
    answering.wait()
    assert moved(before, proxy.metrics()) == {ROUTED % "included": 1, ROUTED % "emergency": 1,
                                              ROUTED % "inbound": 1}


def test_an_emergency_call_whose_trunk_fails_counts_as_failed(phones, proxy):
    before = proxy.metrics()
    trunk(phones, EMERGENCY, (503, "Overloaded"))
    result = phones.call(phones.phone("2001"), "112").wait()
    assert result.final == (500, "Trunks Unavailable")
    assert moved(before, proxy.metrics()) == {ROUTED % "emergency": 1, FAILED % "emergency": 1}
    assert re.search(rf"EMERGENCY CALL 112 call-id {re.escape(call_id_of(result.messages))} .* FAILED on every route",
                     proxy.log_text())


def test_a_prepaid_call_is_in_flight_while_up_and_counted(phones, proxy, redis_server):
    account = Account(redis_server, SIP_DB)
    assert account.url == proxy.redis_url
    try:
        account.reset(500)
        before = proxy.metrics()
        ines = phones.phone("2001", domain="initech.test")
        announcer(phones)
        carrier = trunk(phones, PRIMARY)
        call = phones.call(ines, GERMAN_MOBILE, hold_ms=3000)
        wait_for(lambda: proxy.metrics()[IN_FLIGHT] == before[IN_FLIGHT] + 1, 15, "the reservation in flight")
        assert call.wait().final == (200, "OK")
        carrier.wait()
        wait_for(lambda: proxy.metrics()[IN_FLIGHT] == before[IN_FLIGHT], 10, "the reservation to settle")
        assert moved(before, proxy.metrics()) == {ROUTED % "prepaid": 1}
    finally:
        admin(proxy.redis_url, "prepaid", "deactivate", "initech")


def test_the_metrics_are_not_served_on_the_sip_socket(proxy):
    status, body = proxy.http_get(port=proxy.port)
    assert status == 404 and "kamailio_" not in body
    assert proxy.http_get("/other")[0] == 404  # only /metrics, even on the metrics socket
    assert proxy.http_get()[0] == 200


def test_sip_on_the_metrics_socket_is_dropped_unanswered(proxy):
    mark = proxy.mark()
    request = options_request(proxy).replace("SIP/2.0/UDP", "SIP/2.0/TCP")
    with socket.create_connection((proxy.ip, proxy.metrics_port), timeout=2) as conn:
        conn.sendall(request.encode())
        conn.settimeout(1.5)
        try:
            answer = conn.recv(4096)
        except socket.timeout:
            answer = b""
    assert answer == b""
    wait_for(lambda: "on the metrics socket dropped" in proxy.log_since(mark), 5, "the drop's log line")
    # the SIP socket still answers over TCP, and from its own port
    assert status_line(send_raw(proxy, options_request(proxy))) == (200, "OK")


@pytest.fixture
def outage(workdir):
    """A proxy of its own whose Redis goes away."""
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    proxy = Proxy(workdir, redis.url).start()
    yield redis, proxy
    proxy.stop()
    redis.stop()


def test_redis_down_counts_redis_errors_and_refused_calls(outage, workdir):
    redis, proxy = outage
    phones = Phones(proxy, workdir)
    try:
        alice = phones.phone("2001")
        assert phones.register(alice).final == (200, "OK")
        before = proxy.metrics()
        redis.stop()
        assert phones.call(alice, "2002").wait().final == (503, "Subscriber Data Unavailable")
        counted = moved(before, proxy.metrics())
        assert counted.get(REDIS_ERRORS % "unreachable", 0) >= 1, counted
        assert counted.get(REFUSED % "store_down") == 1, counted
        assert set(counted) <= {REDIS_ERRORS % "unreachable", REDIS_ERRORS % "timeout", REFUSED % "store_down"}
    finally:
        phones.cleanup()


def test_a_redis_with_another_schema_counts_as_a_schema_error(outage, workdir):
    redis, proxy = outage
    before = proxy.metrics()
    redis.client().flushdb()
    phones = Phones(proxy, workdir)
    try:
        assert phones.register(phones.phone("2001")).final == (503, "Subscriber Data Not Provisioned")
    finally:
        phones.cleanup()
    assert moved(before, proxy.metrics()).get(REDIS_ERRORS % "schema", 0) >= 1


def test_sip_over_tcp_leaves_from_the_sip_socket_never_the_metrics_one(workdir):
    """Kamailio sends TCP from one socket it picks among the TCP listeners (kamailio.cfg, listen):
    a call out to a TCP trunk must name the SIP port in its Via and Record-Route."""
    office = office_file(OFFICE)
    for peer in office["trunks"]:
        if peer["name"] == "primary":
            peer["transport"] = "tcp"
    path = workdir / f"office-tcp-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(office), encoding="utf-8")
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(path))
    proxy = Proxy(workdir, redis.url).start()
    phones = Phones(proxy, workdir)
    try:
        ip, port = PRIMARY
        carrier = Sipp("answer.xml", ["-set", "ring", "100", "-t", "t1"], workdir, ip=ip, port=port)
        phones.running.append(carrier)
        carrier.start(timeout=20)
        assert phones.call(phones.phone("2001"), "0612345678", hold_ms=100).wait().final == (200, "OK")
        invite = carrier.wait().received("INVITE")[0]
        via = re.search(r"^Via: SIP/2.0/TCP ([^;\r\n]+)", invite, re.M | re.I).group(1)
        assert via == f"{proxy.ip}:{proxy.port}"
        # the dialog's way back: the proxy's Contact (topology hiding, kamailio.cfg: no Record-Route)
        contact = re.search(r"^Contact: *<([^>\r\n]+)>", invite, re.M | re.I).group(1)
        assert f"@{proxy.ip}:{proxy.port};transport=tcp" in contact, contact
        assert f":{proxy.metrics_port}" not in invite and not re.search(r"^Record-Route:", invite, re.M | re.I), invite
    finally:
        phones.cleanup()
        proxy.stop()
        redis.stop()


# -- the sample Prometheus configuration, scraping for real ---------------------------------------
PROM = ROOT / "monitoring" / "prometheus"


def prometheus_query(port: int, query: str) -> list[dict]:
    """The query's result; [] while Prometheus is not listening or not ready yet (503 while it loads its
    storage and rules: wait_for asks again)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)["data"]["result"]
    except urllib.error.HTTPError as exc:
        if exc.code == 503:  # up, not ready yet
            return []
        raise
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return []
        raise


class Webhook:
    """An HTTP receiver standing in for ops' paging or chat webhook: what Alertmanager POSTs to it."""

    def __init__(self):
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self) -> list[str]:
        return [a["labels"]["alertname"] for body in self.received for a in body["alerts"] if a["status"] == "firing"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scraping(proxy, redis_server, workdir):
    """The monitoring as deployed, around the session's proxy: Prometheus with monitoring/prometheus/
    prometheus.yml and every rules file, scraping every second the proxy, rtpengine's page through
    kemi.metrics_relay, node_exporter with the textfile of `kemi.admin metrics`, and
    prometheus-redis-exporter on the session's Redis; Alertmanager with the role's configuration,
    its receiver a webhook of the test's."""
    from tests.unit.test_monitoring import ALERTMANAGER_DEFAULTS, render

    run = workdir / f"prometheus-{uuid.uuid4().hex[:6]}"
    (run / "textfile").mkdir(parents=True)
    config = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ports = {name: free_port(kind=socket.SOCK_STREAM) for name in ("exporter", "web", "node", "relay", "alerts")}
    jobs["cowork-proxy"]["static_configs"][0]["targets"] = [f"{proxy.ip}:{proxy.metrics_port}"]
    jobs["redis"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['exporter']}"]
    jobs["node"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['node']}"]
    jobs["rtpengine"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['relay']}"]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['alerts']}"]
    (run / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for rules in PROM.glob("*.rules.yml"):
        shutil.copy(rules, run / rules.name)
    webhook = Webhook()
    (run / "alertmanager.yml").write_text(render(
        "alertmanager.yml.j2", **{**ALERTMANAGER_DEFAULTS, "monitoring_alertmanager_webhook_url": webhook.url,
                                  "monitoring_alertmanager_group_wait": "1s"}))
    account = Account(redis_server, SIP_DB)
    account.reset(300)  # an active Prepaid Account under the low-balance mark (5.00)
    admin(proxy.redis_url, "metrics", "--textfile", str(run / "textfile" / "cowork.prom"), "--cert", proxy.tls_cert)
    # the ledger's reconciliation, as the Ansible cron writes it beside (ledger.rules.yml reads it)
    admin(proxy.redis_url, "prepaid", "audit", "--quiet", "--textfile", str(run / "textfile" / "cowork-prepaid-audit.prom"))
    admin(proxy.redis_url, "prepaid", "deactivate", "initech")
    logs = open(run / "services.log", "wb")
    started = [
        subprocess.Popen(["prometheus-redis-exporter", "-redis.addr", f"redis://127.0.0.1:{redis_server.port}",
                          "-redis.user", EXPORTER_USER, "-redis.password", EXPORTER_PASSWORD,
                          "-web.listen-address", f"127.0.0.1:{ports['exporter']}"], stdout=logs, stderr=logs),
        subprocess.Popen(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ports['node']}",
                          f"--collector.textfile.directory={run / 'textfile'}"], stdout=logs, stderr=logs),
        subprocess.Popen([sys.executable, "-m", "kemi.metrics_relay", f"--listen=127.0.0.1:{ports['relay']}",
                          f"--upstream={proxy.ip}:{proxy.media.http_port}"], cwd=ROOT, stdout=logs, stderr=logs),
        subprocess.Popen(["prometheus-alertmanager", f"--config.file={run / 'alertmanager.yml'}",
                          f"--storage.path={run / 'alertmanager'}", f"--web.listen-address=127.0.0.1:{ports['alerts']}",
                          "--cluster.listen-address="], stdout=logs, stderr=logs),
        subprocess.Popen(["prometheus", f"--config.file={run / 'prometheus.yml'}", f"--storage.tsdb.path={run / 'data'}",
                          f"--web.listen-address=127.0.0.1:{ports['web']}"], stdout=logs, stderr=logs),
    ]
    try:
        yield ports["web"], run, webhook
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            proc.wait(15)
        webhook.close()


def test_the_monitoring_scrapes_everything_its_rules_and_dashboard_read_and_an_alert_reaches_ops(scraping, phones,
                                                                                                   proxy):
    from tests.unit.test_monitoring import dashboard_exprs, rules, series_names

    port, run, webhook = scraping
    query = lambda q: (lambda: prometheus_query(port, q))  # noqa: E731
    # generous: Prometheus starts slowly on a loaded machine
    for job in ("cowork-proxy", "redis", "node", "rtpengine"):
        wait_for(query(f'up{{job="{job}"}} == 1'), 90, f"Prometheus to scrape {job} ({run / 'services.log'})")
    alice = phones.phone("2001")
    phones.call(alice, "0899123456").wait()
    # a call out whose first trunk fails over to the second (failover counter, post-dial delay, Redis latency)
    trunk(phones, PRIMARY, (503, "Overloaded"))
    backup = trunk(phones, BACKUP)
    assert phones.call(alice, "0612345678", hold_ms=100).wait().final == (200, "OK")
    backup.wait()
    # an emergency call that reaches nobody: its alert must reach the webhook
    trunk(phones, EMERGENCY, (503, "Overloaded"))
    assert phones.call(alice, "112").wait().final == (500, "Trunks Unavailable")
    refused = wait_for(query('kamailio_call_refusals_total{reason="premium_blocked"} > 0'), 30, "a refusal")
    assert refused[0]["metric"]["job"] == "cowork-proxy"
    assert wait_for(query('kamailio_trunk_failovers_total{trunk="primary"} > 0'), 30, "the failover")
    assert wait_for(query("kamailio_post_dial_delay_seconds_count > 0"), 30, "a post-dial delay")
    assert wait_for(query('rtpengine_sessions{type="own"}'), 30, "rtpengine's sessions")
    assert wait_for(query(f'cowork_certificate_expiry_timestamp_seconds{{path="{proxy.tls_cert}"}} > time()'), 30,
                    "the certificate's expiry")
    assert wait_for(query('cowork_prepaid_balance_low{company="initech"} == 1'), 30, "the low balance")
    wait_for(lambda: "CoworkEmergencyCallFailed" in webhook.alerts(), 60,
             f"the alert at the webhook (Alertmanager's log: {run / 'services.log'})")
    # every series a rule or a panel reads is one the real components export (or a recording rule)
    wait_for(query("cowork:sip_final_replies:rate5m"), 60, "the recording rules")
    url = f"http://127.0.0.1:{port}/api/v1/label/__name__/values"
    with urllib.request.urlopen(url, timeout=5) as answer:
        scraped = set(json.load(answer)["data"])
    recorded = {r["record"] for r in rules() if "record" in r}
    wanted = {n for r in rules() for n in series_names(r["expr"])} | {n for e in dashboard_exprs() for n in series_names(e)}
    # exported by Redis only on a site with a replica (scripts/redis-site.sh; tests/unit/test_monitoring.py
    # fires the rule that reads it on its real name)
    replica_only = {"redis_connected_slave_lag_seconds"}
    assert wanted - scraped - recorded - replica_only == set(), sorted(wanted - scraped - recorded)


def test_rtpengine_s_relay_serves_its_metrics_and_nothing_else(proxy, workdir):
    """rtpengine's --listen-http takes /cli commands (`terminate all`) and /ng offers unauthenticated:
    kemi.metrics_relay, the only door to it off the host, passes GET /metrics alone."""
    import http.client

    port = free_port(kind=socket.SOCK_STREAM)
    relay = subprocess.Popen([sys.executable, "-m", "kemi.metrics_relay", f"--listen=127.0.0.1:{port}",
                              f"--upstream={proxy.ip}:{proxy.media.http_port}"], cwd=ROOT)
    mark = proxy.media.log_path.stat().st_size

    def ask(method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=body)
            answer = conn.getresponse()
            return answer.status, answer.read().decode(errors="replace")
        finally:
            conn.close()
    try:
        wait_for(lambda: _listening(port), 20, "the relay")
        status, page = ask("GET", "/metrics")
        assert status == 200 and "rtpengine_sessions" in page
        for method, path, body in [("GET", "/cli/terminate%20all", None), ("GET", "/cli/list%20numsessions", None),
                                   ("POST", "/ng", b"d7:command4:pinge"), ("GET", "/admin", None),
                                   ("GET", "/metrics/../cli/list%20totals", None), ("POST", "/metrics", b"x"),
                                   ("GET", "//cli/list%20totals", None), ("HEAD", "/cli/terminate%20all", None)]:
            status, text = ask(method, path, body)
            assert status == 404 and "sessions" not in text.lower(), (method, path, status, text)
        # rtpengine itself saw none of them (and would have answered the CLI: the door the relay keeps shut)
        seen = proxy.media.log_text()[mark:]
        assert "cli" not in seen.lower() and "terminate" not in seen.lower(), seen
        direct = http.client.HTTPConnection(proxy.ip, proxy.media.http_port, timeout=5)
        direct.request("GET", "/cli/list%20numsessions")
        assert "sessions" in direct.getresponse().read().decode().lower()
        direct.close()
    finally:
        relay.terminate()
        relay.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_sip_over_tcp_without_content_length_is_framed_by_its_headers(proxy):
    """tcp_accept_no_cl (for the scrapes) applies to SIP over TCP too: a request without Content-Length
    is one without a body, and bytes after its headers are a message of their own, refused as such."""
    mark = proxy.mark()
    request = options_request(proxy).replace("SIP/2.0/UDP", "SIP/2.0/TCP").replace("Content-Length: 0\r\n", "")
    with socket.create_connection((proxy.ip, proxy.port), timeout=5) as conn:
        conn.sendall(request.encode() + b"v=0\r\no=smuggled 1 1 IN IP4 127.0.0.9\r\n\r\n")
        answer = conn.recv(4096).decode(errors="replace")
    assert status_line(answer) == (200, "OK") and answer.count("SIP/2.0 ") == 1
    wait_for(lambda: "parse_msg" in proxy.log_since(mark) or "bad message" in proxy.log_since(mark), 5,
             "the trailing bytes refused as a message")
    assert status_line(send_raw(proxy, options_request(proxy))) == (200, "OK")


@pytest.fixture(scope="module")
def json_proxy(tmp_path_factory):
    """A proxy of its own logging as the Ansible role sets it up: LOG_FORMAT=json (one for the module's
    JSON tests: each reads its own part of the log)."""
    workdir = tmp_path_factory.mktemp("json-logs")
    redis = RedisServer(workdir).start()
    admin(redis.url, "load", str(OFFICE))
    proxy = Proxy(workdir, redis.url, LOG_FORMAT="json").start()
    yield proxy
    proxy.stop()
    redis.stop()


def json_lines(text: str) -> list[dict]:
    """Every line of a LOG_FORMAT=json log as JSON, strictly (a raw control character fails)."""
    lines = [line for line in text.splitlines() if line.strip()]
    # Kamailio prints its sockets to stdout once at start, outside the log engine
    assert all(line.startswith(("{", "Listening on", "Aliases:", " ")) for line in lines), lines
    return [json.loads(line, strict=True) for line in lines if line.startswith("{")]


def test_json_logs_carry_the_call_id_and_the_time_on_every_line_of_a_call(json_proxy, workdir):
    """Every line is one JSON object; every line logged while the proxy handles a call's messages, its
    decision line included, has the time and the call's Call-ID in "logprefix"."""
    import time

    proxy = json_proxy
    phones = Phones(proxy, workdir)
    mark = proxy.mark()
    try:
        started = time.time()
        result = phones.call(phones.phone("2001"), "0899123456").wait()
        assert result.final[0] == 403
        cid = call_id_of(result.messages)
        wait_for(lambda: f"call {cid} refused" in proxy.log_since(mark), 10, "the decision line")
        lines = json_lines(proxy.log_text())
        mine = [line for line in lines if line.get("logprefix", "").endswith(f" {cid}}} ")]
        assert any(line["message"].startswith(f"call {cid} refused premium_blocked: 403") for line in mine), mine
        # nothing about this call is logged without its Call-ID and time
        assert all(line in mine for line in lines if cid in line["message"]), lines
        for line in mine:
            stamp, _, rest = line["logprefix"].partition(" ")
            assert started - 5 < float(stamp) < time.time() + 5 and rest.startswith("{1 "), line
            assert line["level"] and not line["message"].endswith("\n")
    finally:
        phones.cleanup()


@pytest.mark.parametrize("cid", [
    'x", "level": "CRIT", "forged": "1@h',        # fields of its own
    '"}{"level": "CRIT", "forged": "2"}{"a": "',  # a whole second object
    'back\\slash\\"@h',                        # backslashes that would un-escape the closing quote
    'tab\tand\x01ctl\x1b[31mred@h',             # control bytes: invalid JSON, a terminal's escape codes
])
def test_a_hostile_call_id_forges_no_field_and_breaks_no_json_line(json_proxy, cid):
    """A Call-ID may hold '"' and '\\' (RFC 3261 word); Kamailio 5.6 writes the log prefix unescaped.
    Whatever a phone puts there, every line stays one JSON object with the proxy's own fields only, and
    the call is still refused, counted and logged."""
    proxy = json_proxy
    mark = proxy.mark()
    with Uac(proxy) as alice:
        answer = alice.invite("2001", "acme.test", "alice-secret-1", "0899123456", cid=cid).final
    assert answer is not None and answer[0] == 403, answer
    wait_for(lambda: "refused premium_blocked" in proxy.log_since(mark), 10, "the decision line")
    lines = json_lines(proxy.log_since(mark))
    assert lines and all("forged" not in line and line["level"] != "CRIT" for line in lines), lines
    keys = {"idx", "pid", "level", "module", "file", "line", "function", "logprefix", "message"}
    assert all(set(line) <= keys for line in lines), lines
    decision = [line for line in lines if "refused premium_blocked" in line["message"]]
    assert decision and cid in decision[0]["message"]  # the message, escaped by the engine, keeps it whole
    assert all('"' not in line.get("logprefix", "") and "\x1b" not in line.get("logprefix", "") for line in lines)


