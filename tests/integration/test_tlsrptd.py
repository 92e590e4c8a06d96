#!/usr/bin/python3
"""halyard-tlsrptd, the real binary under systemd-socket-activate:

- Record (oneway, as halyard-queued sends it) aggregates the RFC 8460 way;
  GetStatus counts; Preview's JSON passes the same checker that reads the
  real published reports in ../shared/testdata/tlsrpt/, plus the strict
  schema; bad input is refused and counted;
- a result is safe once synced (GetStatus recordsSynced): after kill -9 and
  a restart every synced result is there, a torn journal tail is cut off;
- a flood from one broken destination stays bounded (detail rows, domains,
  journal size through compaction);
- SendReports end to end: _smtp._tls TXT from a real DNS server on loopback
  (tests/dns/fixture.sh), mailto: through a real halyard-queued relaying
  (Routes=) to an aiosmtpd receiver, where the message is decoded and
  checked (headers, attachment name, gzip, JSON); https: POSTed to a local
  HTTPS endpoint with a test CA; retries and dropping after GiveUpAfter=;
  ListReports; the day is not reported twice;
- halyardctl tlsrpt status|preview|reports."""

import datetime
import email
import email.policy
import gzip
import http.server
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import unittest

import harness
import tlsrpt_check
from harness import BUILD_ROOT, VarlinkConn, halyardctl, wait_until
from smtp_peers import free_port

TLSRPTD = BUILD_ROOT / "services" / "tlsrptd" / "halyard-tlsrptd"
FIXTURE = harness.SOURCE_ROOT / "tests" / "dns" / "fixture.sh"

STS = ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"]
BASE_CONFIG = "[TlsRpt]\nSubmitter=mta.halyard.test\nOrganizationName=halyard test\nCommitInterval=50ms\n"


def yesterday_noon():
    return int(time.time()) // 86400 * 86400 - 43200


def day_string(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")


class Tlsrptd:
    """One halyard-tlsrptd with its own state directory, socket and config."""

    def __init__(self, tmp, config=BASE_CONFIG):
        self.tmp = tmp
        self.socket = tmp / "io.halyard.TlsRpt"
        self.state = tmp / "state"
        self.config = tmp / "halyard.conf"
        self.config.write_text(config)
        self.proc = None

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        argv = [harness.SOCKET_ACTIVATE, "-l", str(self.socket), "--fdname=varlink",
                "-E", "HALYARD_CONFIG=%s" % self.config, str(TLSRPTD), "--state=%s" % self.state]
        self.stderr = open(self.tmp / "tlsrptd.stderr", "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=env, start_new_session=True)
        harness._live_processes.append(self.proc)
        wait_until(lambda: self.proc.poll() is not None or harness.connectable(self.socket), 10,
                   what="tlsrptd socket")
        wait_until(lambda: self.proc.poll() is not None or os.readlink("/proc/%d/exe" % self.proc.pid) == str(TLSRPTD),
                   10, what="tlsrptd exec")
        if self.proc.poll() is not None:
            raise AssertionError("tlsrptd exited: %s" % self.log())
        return self

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.stderr.close()

    def stop(self):
        if self.proc.poll() is None:
            self.kill()
        self.stderr.close()

    def log(self):
        return (self.tmp / "tlsrptd.stderr").read_text(errors="replace")

    def conn(self):
        return VarlinkConn(str(self.socket))

    def call(self, method, params=None, timeout=None):
        with self.conn() as c:
            r = c.call("io.halyard.TlsRpt." + method, params or {}, timeout=timeout)
        return r

    def ok(self, method, params=None, timeout=None):
        r = self.call(method, params, timeout)
        if "error" in r:
            raise AssertionError("%s failed: %r\n%s" % (method, r, self.log()[-3000:]))
        return r["parameters"]

    def status(self):
        return self.ok("GetStatus")


def record(domain, success=True, ptype="sts", strings=STS, mx=("mx.example.com",), **kw):
    p = {"policyDomain": domain, "policyType": ptype, "success": success}
    if strings is not None and ptype != "no-policy-found":
        p["policyStrings"] = list(strings)
    if mx is not None and ptype == "sts":
        p["mxHosts"] = list(mx)
    p.update(kw)
    return p


def send_records(t, records):
    """Oneway calls on one connection, as halyard-queued sends them."""
    with t.conn() as c:
        for r in records:
            c.send("io.halyard.TlsRpt.Record", r, oneway=True)
        # A call after them: answered only once the oneway ones were handled.
        c.call("io.halyard.TlsRpt.GetStatus", {})


class CollectTest(harness.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = harness.TempDir()
        self.addCleanup(self.tmp.cleanup)

    def start(self, config=BASE_CONFIG):
        t = Tlsrptd(self.tmp, config).start()
        self.addCleanup(t.stop)
        return t

    def test_record_status_preview(self):
        t = self.start()
        recs = [record("example.com") for _ in range(5)]
        recs += [record("example.com", False, resultType="certificate-expired", sendingMtaIp="192.0.2.1",
                        receivingMxHostname="mx.example.com", receivingIp="192.0.2.25",
                        receivingMxHelo="mx.example.com") for _ in range(3)]
        recs += [record("example.com", False, resultType="certificate-expired", sendingMtaIp="2001:db8::1",
                        receivingMxHostname="mx.example.com", receivingIp="2001:db8::25")]
        # Policy-level failure: no MX, no IP yet (emitted without them, never "").
        recs += [record("example.com", False, resultType="sts-policy-fetch-error", sendingMtaIp="",
                        failureReasonCode="HTTP 404")]
        recs += [record("dane.example.net", ptype="tlsa", strings=["3 1 1 0123abcd"], mx=["ignored.example"])]
        recs += [record("dane.example.net", False, ptype="tlsa", strings=["3 1 1 0123abcd"], resultType="tlsa-invalid",
                        receivingMxHostname="mx.dane.example.net", additionalInformation="https://mta.halyard.test/why")]
        recs += [record("Plain.Example.ORG.", ptype="no-policy-found", strings=["dropped"])]
        send_records(t, recs)
        st = t.status()
        self.assertEqual(st["day"], day_string(time.time()))
        self.assertEqual((st["domains"], st["sessions"], st["successes"], st["failures"]), (3, 13, 7, 6))
        self.assertEqual(st["recordsReceived"], 13)
        self.assertEqual(st["recordsRefused"], 0)
        self.assertIn("3 domains", st["summary"])
        wait_until(lambda: t.status()["recordsSynced"] == 13, what="results synced")

        rep = t.ok("Preview", {"policyDomain": "example.com"})["report"]
        parsed = tlsrpt_check.check_generated(rep)
        self.assertEqual(parsed["org"], "halyard test")
        self.assertEqual(parsed["contact"], "postmaster@mta.halyard.test")
        self.assertRegex(parsed["report_id"], r"^\d{8}\.example\.com\.[0-9a-f]{16}@mta\.halyard\.test$")
        self.assertEqual(len(parsed["policies"]), 1)
        p = parsed["policies"][0]
        self.assertEqual((p["type"], p["domain"], p["strings"], p["mx"], p["ok"], p["fail"]),
                         ("sts", "example.com", STS, ["mx.example.com"], 5, 5))
        self.assertEqual(sorted((d["result-type"], d.get("sending-mta-ip"), d["count"]) for d in p["details"]),
                         [("certificate-expired", "192.0.2.1", 3), ("certificate-expired", "2001:db8::1", 1),
                          ("sts-policy-fetch-error", None, 1)])
        fetch = [d for d in rep["policies"][0]["failure-details"] if d["result-type"] == "sts-policy-fetch-error"][0]
        self.assertEqual(fetch, {"result-type": "sts-policy-fetch-error", "failure-reason-code": "HTTP 404",
                                 "failed-session-count": 1})

        dane = tlsrpt_check.check_generated(t.ok("Preview", {"policyDomain": "dane.example.net"})["report"])
        self.assertEqual(dane["policies"][0]["type"], "tlsa")
        self.assertEqual(dane["policies"][0]["mx"], [])  # tlsa has no mx-host
        plain = t.ok("Preview", {"policyDomain": "plain.example.org"})["report"]
        tlsrpt_check.check_generated(plain)
        self.assertNotIn("policy-string", plain["policies"][0]["policy"])

        r = t.call("Preview", {"policyDomain": "nothing.example"})
        self.assertEqual(r.get("error"), "io.halyard.TlsRpt.NoResults")
        r = t.call("Preview", {"policyDomain": "example.com", "day": "2026-13-01"})
        self.assertEqual(r.get("error"), "io.halyard.TlsRpt.InvalidDay")

    def test_samples_and_output_one_checker(self):
        """The checker that validates halyard's Preview reads the published
        reports too: the lenient parse takes every sample but the negative
        one, and the strict schema passes exactly the four README lists."""
        d = tlsrpt_check.testdata_dir()
        if d is None:
            self.skipTest("../shared/testdata/tlsrpt not found (set HALYARD_TLSRPT_TESTDATA)")
        strict_pass = {"google-no-policy-found.json", "google-sts-mx-host.json",
                       "google-anonymized-validation-failure.json", "mailru-sts-fetch-error.json"}
        seen = set()
        for f in sorted(d.glob("*.json")):
            if f.name == "tlsrpt-report.schema.json":
                continue
            seen.add(f.name)
            obj = json.loads(f.read_text())
            if f.name == "invalid-policy-type.json":
                with self.assertRaises(tlsrpt_check.ReportError):
                    tlsrpt_check.parse_report(obj)
                continue
            r = tlsrpt_check.parse_report(obj)
            self.assertGreaterEqual(len(r["policies"]), 1, f.name)
            self.assertEqual(not tlsrpt_check.schema_errors(obj, d), f.name in strict_pass, f.name)
        self.assertTrue(strict_pass <= seen)
        # The attachment of the Google .eml is the sample JSON byte for byte.
        msg = email.message_from_bytes((d / "google-no-policy-found.eml").read_bytes(), policy=email.policy.default)
        att = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"][0]
        self.assertEqual(gzip.decompress(att.get_content()), (d / "google-no-policy-found.json").read_bytes())
        # And halyard's own output passes both sides with the same field names.
        t = self.start()
        send_records(t, [record("example.com"), record("example.com", False, resultType="validation-failure",
                                                       receivingIp="192.0.2.9", failureReasonCode="mtasts-policy-mx-mismatch")])
        rep = t.ok("Preview", {"policyDomain": "example.com"})["report"]
        self.assertEqual(tlsrpt_check.schema_errors(rep, d), [])
        google = json.loads((d / "google-anonymized-validation-failure.json").read_text())
        self.assertEqual(set(rep), set(google))
        self.assertEqual(set(rep["policies"][0]), set(google["policies"][0]))
        self.assertEqual(set(rep["policies"][0]["summary"]), set(google["policies"][0]["summary"]))

    def test_bad_records_refused(self):
        t = self.start()
        bad = [
            (record("exa mple.com"), "policyDomain"),
            (record("example..com"), "policyDomain"),
            (record("example.com", ptype="dane"), "policyType"),
            (record("example.com", False, resultType="certificate-expired", sendingMtaIp="300.1.1.1"), "sendingMtaIp"),
            (record("example.com", False, receivingIp="mx.example.com"), "receivingIp"),
            (record("example.com", False, receivingMxHelo="a\r\nb"), "receivingMxHelo"),
            (record("example.com", mx=["bad host"]), "mxHosts"),
            (record("example.com", time=-5), "time"),
        ]
        with t.conn() as c:
            for params, field in bad:
                r = c.call("io.halyard.TlsRpt.Record", params)
                self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", (params, r))
                self.assertEqual(r["parameters"]["parameter"], field)
            # Not in the IDL: refused before the handler.
            r = c.call("io.halyard.TlsRpt.Record", dict(record("example.com"), extra=1))
            self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter")
            # A day long gone and the future are refused too.
            for when in (int(time.time()) - 5 * 86400, int(time.time()) + 3 * 86400):
                r = c.call("io.halyard.TlsRpt.Record", record("example.com", time=when))
                self.assertIn("error", r)
            # Oneway: never an answer, but counted.
            c.send("io.halyard.TlsRpt.Record", record("EXAMPLE.."), oneway=True)
            self.assertTrue(c.nothing_pending(0.3))
        st = t.status()
        self.assertEqual(st["sessions"], 0)
        self.assertEqual(st["recordsRefused"], len(bad) + 3)

    def test_kill9_keeps_synced_results(self):
        t = self.start(BASE_CONFIG.replace("CommitInterval=50ms", "CommitInterval=300ms"))
        # Round 1: wait until synced; these must all survive.
        safe = [record("example.com", False, resultType="validation-failure", receivingIp="192.0.2.%d" % i)
                for i in range(1, 41)]
        send_records(t, safe)
        wait_until(lambda: t.status()["recordsSynced"] == 40, what="round 1 synced")
        # Round 2: sent right before the kill; any of them may be lost.
        with t.conn() as c:
            for i in range(1, 61):
                c.send("io.halyard.TlsRpt.Record",
                       record("example.com", False, resultType="validation-failure", receivingIp="198.51.100.%d" % i),
                       oneway=True)
            c.call("io.halyard.TlsRpt.GetStatus", {})
            t.kill()
        # A torn last line, as a crash in the middle of write() leaves it.
        journal = next((t.state / "results").glob("*.log"))
        with open(journal, "ab") as f:
            f.write(b'0badc0de {"d":1,"pd":"torn.example')
        t.start()
        rep = t.ok("Preview", {"policyDomain": "example.com"})["report"]
        ips = {d["receiving-ip"] for d in rep["policies"][0]["failure-details"]}
        self.assertTrue({"192.0.2.%d" % i for i in range(1, 41)} <= ips, sorted(ips))
        total = rep["policies"][0]["summary"]["total-failure-session-count"]
        self.assertEqual(total, len(ips))
        self.assertGreaterEqual(total, 40)
        self.assertLessEqual(total, 100)
        self.assertIn("incomplete last line", t.log())
        st = t.status()
        self.assertEqual(st["recordsSynced"], total)
        # The journal goes on after the cut.
        send_records(t, [record("example.com")])
        wait_until(lambda: t.status()["recordsSynced"] == total + 1, what="sync after restart")
        t.kill()
        t.start()
        self.assertEqual(t.status()["sessions"], total + 1)

    def test_flood_is_bounded(self):
        t = self.start(BASE_CONFIG + "MaxFailureDetails=5\nMaxDomains=3\nCompactSize=16K\n")
        flood = [record("broken.example", False, resultType="certificate-not-trusted",
                        receivingIp="10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255),
                        failureReasonCode="self-signed certificate " + "x" * 100) for i in range(3000)]
        for k in range(0, len(flood), 500):
            send_records(t, flood[k:k + 500])
        send_records(t, [record("a.example"), record("b.example"), record("c.example")])
        st = t.status()
        self.assertEqual(st["domains"], 3)  # broken, a, b; c over the cap
        self.assertEqual(st["recordsRefused"], 1)
        self.assertEqual(st["detailsOverflowed"], 2995)
        wait_until(lambda: t.status()["recordsSynced"] == 3002, what="flood synced")
        self.assertGreaterEqual(t.status()["compactions"], 1)
        rep = t.ok("Preview", {"policyDomain": "broken.example"})["report"]
        p = rep["policies"][0]
        self.assertEqual(len(p["failure-details"]), 5)
        self.assertEqual(p["summary"]["total-failure-session-count"], 3000)
        tlsrpt_check.check_generated(rep)
        size = sum(f.stat().st_size for f in (t.state / "results").glob("*.log"))
        self.assertLess(size, 64 * 1024, "journal not compacted")
        # The compacted journal replays to the same report.
        t.kill()
        t.start()
        again = t.ok("Preview", {"policyDomain": "broken.example"})["report"]
        self.assertEqual(again["policies"], rep["policies"])
        t.kill(signal.SIGTERM)
        self.assertEqual(t.proc.returncode, 0, t.log()[-3000:])

    def test_check_and_reload(self):
        bad = self.tmp.write("bad.conf", "[TlsRpt]\nSubmitter=not a domain\n")
        r = subprocess.run([str(TLSRPTD), "--check"], env=dict(os.environ, HALYARD_CONFIG=str(bad)),
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:2: error: invalid Submitter=not a domain" % bad, r.stderr)
        bad = self.tmp.write("bad-sign.conf", "[TlsRpt]\nSign=yes\nSignDomain=user@example.com\n")
        r = subprocess.run([str(TLSRPTD), "--check"], env=dict(os.environ, HALYARD_CONFIG=str(bad)),
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:3: error: invalid SignDomain=user@example.com" % bad, r.stderr)
        t = self.start()
        send_records(t, [record("example.com")])
        self.assertEqual(t.ok("Preview", {"policyDomain": "example.com"})["report"]["organization-name"], "halyard test")
        t.config.write_text(BASE_CONFIG.replace("halyard test", "reloaded org"))
        os.kill(t.proc.pid, signal.SIGHUP)
        wait_until(lambda: t.ok("Preview", {"policyDomain": "example.com"})["report"]["organization-name"]
                   == "reloaded org", what="reload")
        t.config.write_text("[TlsRpt]\nFrom=no-at-sign\n")
        os.kill(t.proc.pid, signal.SIGHUP)
        wait_until(lambda: "invalid From=no-at-sign" in t.log(), what="refused reload")
        self.assertEqual(t.ok("Preview", {"policyDomain": "example.com"})["report"]["organization-name"], "reloaded org")
        self.assertEqual(t.status()["sessions"], 1)

    def test_halyardctl_tlsrpt(self):
        t = self.start()
        send_records(t, [record("example.com"), record("example.com", False, resultType="starttls-not-supported",
                                                       receivingMxHostname="mx.example.com")])
        env = {"HALYARD_RUNTIME_DIR": str(self.tmp.path)}
        r = halyardctl("tlsrpt", "status", env=env)
        self.assertEqual(r.rc, 0, r)
        self.assertIn("Domains today:", r.stdout)
        self.assertRegex(r.stdout, r"Sessions today:\s+2 \(1 successful, 1 failed\)")
        r = halyardctl("--json=short", "tlsrpt", "status", env=env)
        self.assertEqual(json.loads(r.stdout)["sessions"], 2)
        r = halyardctl("tlsrpt", "preview", "example.com", env=env)
        self.assertEqual(r.rc, 0, r)
        tlsrpt_check.check_generated(json.loads(r.stdout))
        r = halyardctl("tlsrpt", "preview", "nothing.example", env=env)
        self.assertEqual(r.rc, 1, r)
        self.assertIn("No results", r.stderr)
        r = halyardctl("tlsrpt", "reports", env=env)
        self.assertEqual(r.rc, 0, r)
        self.assertIn("0 reports", r.stdout)
        r = halyardctl("tlsrpt", "bogus", env=env)
        self.assertEqual(r.rc, 2, r)
        # The generic status table has a tlsrptd row with GetStatus' summary.
        r = halyardctl("status", env=env)
        self.assertRegex(r.stdout, r"tlsrptd\s+running\s+1 domains, 2 sessions today; 0 reports sent, 0 failed")
        t.stop()
        r = halyardctl("tlsrpt", "status", env={"HALYARD_RUNTIME_DIR": str(self.tmp / "nowhere")})
        self.assertEqual(r.rc, 3, r)  # not running


# ---- end to end: DNS, queued, a receiving MTA, an HTTPS endpoint ----------------


def make_test_ca(d):
    """A test CA and a leaf for rpt.halyard.test (openssl)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d, timeout=60)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=halyard tlsrpt test CA", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=rpt.halyard.test",
        "-keyout", "leaf.key", "-out", "leaf.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:rpt.halyard.test\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "leaf.pem")
    return d / "ca.pem", d / "leaf.pem", d / "leaf.key"


class HttpsEndpoint:
    """POST /v1/report over TLS on 127.0.0.1; keeps each request."""

    def __init__(self, cert, key):
        self.posts = []
        self.status = 201
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                outer.posts.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class SendReportsTest(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        from test_delivery import DnsFixture, Sink
        from test_queued import Queued

        cls.tmp = harness.TempDir()
        cls.dns = DnsFixture(cls.tmp)
        cls.sink = Sink()
        ca_dir = cls.tmp / "ca"
        ca_dir.mkdir()
        cls.ca, cert, key = make_test_ca(ca_dir)
        cls.https = HttpsEndpoint(cert, key)
        cls.closed_port = free_port()  # nothing listens: down.halyard.test
        e = cls.dns.env
        qtmp = harness.TempDir()
        cls.qtmp = qtmp
        cls.queued = Queued(qtmp, config="[Queue]\nHostName=queued.halyard.test\nRetrySchedule=1s\nSmtpTimeout=10s\n"
                            "Routes=reports.halyard.test=smtp:[127.0.0.1]:%d\n"
                            "[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\n"
                            % (cls.sink.port, e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"])).start()

    @classmethod
    def tearDownClass(cls):
        if cls.queued.proc.poll() is None:
            cls.queued.kill()
        cls.https.stop()
        cls.sink.stop()
        cls.dns.stop()
        cls.qtmp.cleanup()
        cls.tmp.cleanup()

    def start(self, extra=""):
        e = self.dns.env
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        config = (BASE_CONFIG + "ContactInfo=tlsrpt-contact@mta.halyard.test\nFrom=tlsrpt@mta.halyard.test\n"
                  "QueueAddress=unix:%s\nTestHttpsCAFile=%s\n"
                  "TestHttpsConnectTo=rpt.halyard.test:443:127.0.0.1:%d down.halyard.test:443:127.0.0.1:%d\n"
                  "RetryInitial=1s\nRetryMax=2s\nGiveUpAfter=4s\nHttpsTimeout=5s\n%s"
                  "[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
                  % (self.queued.socket, self.ca, self.https.port, self.closed_port, extra,
                     e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"]))
        t = Tlsrptd(tmp, config).start()
        self.addCleanup(t.stop)
        return t

    def sink_messages(self, rcpt, needle=b""):
        with self.sink.lock:
            return [m for m in self.sink.messages if rcpt in m["rcpts"] and needle in m["content"]]

    def test_send_reports_end_to_end(self):
        t = self.start()
        y = yesterday_noon()
        recs = [record("rpt.halyard.test", time=y) for _ in range(4)]
        recs += [record("rpt.halyard.test", False, time=y, resultType="certificate-host-mismatch",
                        sendingMtaIp="192.0.2.10", receivingMxHostname="mx.rpt.halyard.test", receivingIp="192.0.2.20")
                 for _ in range(2)]
        recs += [record("rpt-mail.halyard.test", ptype="tlsa", strings=["3 1 1 abcdef"], time=y)]
        recs += [record("rpt-two.halyard.test", time=y), record("nothing.halyard.test", time=y),
                 record("rpt-bad.halyard.test", time=y)]
        recs += [record("today.halyard.test")]  # today: not in this run
        send_records(t, recs)
        wait_until(lambda: t.status()["recordsSynced"] == len(recs), what="synced")
        self.assertEqual(t.status()["daysPending"], [day_string(y)])

        reports = t.ok("SendReports", {}, timeout=60)["reports"]
        by_domain = {r["policyDomain"]: r for r in reports}
        self.assertEqual(set(by_domain), {"rpt.halyard.test", "rpt-mail.halyard.test", "rpt-two.halyard.test",
                                          "nothing.halyard.test", "rpt-bad.halyard.test"}, reports)
        for d in ("rpt-two.halyard.test", "nothing.halyard.test", "rpt-bad.halyard.test"):
            self.assertEqual(by_domain[d]["result"], "noRecord", by_domain[d])
            self.assertEqual(by_domain[d]["destinations"], [])
        self.assertIn("more than one", by_domain["rpt-two.halyard.test"]["detail"])
        main = by_domain["rpt.halyard.test"]
        self.assertEqual(main["result"], "sent", main)
        self.assertEqual(main["day"], day_string(y))
        dests = {d["uri"]: d for d in main["destinations"]}
        self.assertEqual(dests["mailto:tlsrpt@reports.halyard.test"]["status"], "enqueued", dests)
        self.assertEqual(dests["https://rpt.halyard.test/v1/report"]["status"], "delivered", dests)
        self.assertEqual(by_domain["rpt-mail.halyard.test"]["result"], "sent")

        # https: the gzipped JSON with the RFC's media type.
        posts = [p for p in self.https.posts if p["path"] == "/v1/report"
                 and json.loads(gzip.decompress(p["body"]))["report-id"] == main["reportId"]]
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["headers"]["Content-Type"], "application/tlsrpt+gzip")
        posted = json.loads(gzip.decompress(posts[0]["body"]))
        parsed = tlsrpt_check.check_generated(posted)
        self.assertEqual(parsed["report_id"], main["reportId"])
        self.assertEqual(parsed["start"].strftime("%Y-%m-%d"), day_string(y))
        p = parsed["policies"][0]
        self.assertEqual((p["ok"], p["fail"], p["details"][0]["count"]), (4, 2, 2))
        self.assertEqual(main["size"], len(posts[0]["body"]))

        # mailto: through halyard-queued to the receiving MTA.
        msgs = wait_until(lambda: self.sink_messages("tlsrpt@reports.halyard.test", main["reportId"].encode()), 30, what="report mail at the sink")
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]["from"], "tlsrpt@mta.halyard.test")
        msg = email.message_from_bytes(msgs[0]["content"], policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "tlsrpt")
        self.assertEqual(msg["TLS-Report-Domain"], "rpt.halyard.test")
        self.assertEqual(msg["TLS-Report-Submitter"], "mta.halyard.test")
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertEqual(str(msg["Subject"]), "Report Domain: rpt.halyard.test Submitter: mta.halyard.test "
                                              "Report-ID: <%s>" % main["reportId"])
        self.assertEqual(msg["From"].addresses[0].addr_spec, "tlsrpt@mta.halyard.test")
        parts = {p.get_content_type(): p for p in msg.walk()}
        self.assertIn("text/plain", parts)
        att = parts["application/tlsrpt+gzip"]
        begin = int(y // 86400 * 86400)
        self.assertRegex(att.get_filename(), r"^mta\.halyard\.test!rpt\.halyard\.test!%d!%d![0-9a-f]+\.json\.gz$"
                         % (begin, begin + 86399))
        mailed = json.loads(gzip.decompress(att.get_content()))
        self.assertEqual(mailed, posted)  # each rua gets the same report
        mail2 = wait_until(lambda: self.sink_messages("only-mail@reports.halyard.test",
                                                     by_domain["rpt-mail.halyard.test"]["reportId"].encode()), 30, what="second report")
        rep2 = json.loads(gzip.decompress([p for p in email.message_from_bytes(mail2[0]["content"],
                                                                              policy=email.policy.default).walk()
                                           if p.get_content_type() == "application/tlsrpt+gzip"][0].get_content()))
        self.assertEqual(tlsrpt_check.check_generated(rep2)["policies"][0]["type"], "tlsa")

        # halyard-queued took the tlsReport flag when its interface has it.
        if "tlsReport" in (harness.SOURCE_ROOT / "services" / "queued" / "io.halyard.Queue.varlink").read_text():
            self.assertNotIn("does not know tlsReport", t.log())
        # Listed, counted, journaled; the day is not reported twice.
        listed = t.ok("ListReports")["reports"]
        self.assertEqual({r["reportId"] for r in listed}, {r["reportId"] for r in reports})
        st = t.status()
        self.assertEqual((st["reportsSent"], st["reportsFailed"], st["daysPending"]), (2, 0, []))
        self.assertEqual(t.ok("SendReports", {}, timeout=60)["reports"], [])
        r = t.call("Record", record("rpt.halyard.test", time=y))
        self.assertIn("error", r)  # that day is closed
        self.assertIn("TLS report %s for rpt.halyard.test delivered to https://rpt.halyard.test/v1/report"
                      % main["reportId"], t.log())
        # The state survives a restart.
        t.kill()
        t.start()
        self.assertEqual(len(t.ok("ListReports")["reports"]), len(listed))
        self.assertEqual({r["reportId"]: r["result"] for r in t.ok("ListReports")["reports"]},
                         {r["reportId"]: r["result"] for r in listed})
        self.assertEqual(t.ok("SendReports", {}, timeout=60)["reports"], [])
        # Nothing is sent twice: what SendReports answered was on disk.
        time.sleep(1.5)
        self.assertEqual(len(self.sink_messages("tlsrpt@reports.halyard.test", main["reportId"].encode())), 1)
        self.assertEqual(len([p for p in self.https.posts
                              if json.loads(gzip.decompress(p["body"]))["report-id"] == main["reportId"]]), 1)
        # SIGTERM: a clean exit (under ASan, a leak would fail it).
        t.kill(signal.SIGTERM)
        self.assertEqual(t.proc.returncode, 0, t.log()[-3000:])

    def fake_signer(self, path, header="DKIM-Signature: v=1; a=ed25519-sha256; d=mta.halyard.test; s=test; "
                                         "h=from:tls-report-domain; bh=AAAA; b=BBBB"):
        """A stand-in io.halyard.Arc on path: answers every Sign with a fixed
        DKIM-Signature; returns the list of (call, content) it got."""
        import socket as socketmod

        calls = []
        listener = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(4)
        listener.settimeout(0.2)
        running = [True]

        def serve():
            while running[0]:
                try:
                    c, _ = listener.accept()
                except socketmod.timeout:
                    continue
                except OSError:
                    return
                with c:
                    c.settimeout(10)
                    buf, fds = b"", []
                    while b"\0" not in buf:
                        data, got, _f, _a = socketmod.recv_fds(c, 65536, 4)
                        if not data:
                            break
                        buf += data
                        fds += got
                    call = json.loads(buf.split(b"\0")[0])
                    content = b""
                    for fd in fds:
                        content = os.pread(fd, 1 << 20, 0)
                        os.close(fd)
                    calls.append((call, content))
                    c.sendall(json.dumps({"parameters": {"header": header}}).encode() + b"\0")

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        self.addCleanup(lambda: (running.__setitem__(0, False), th.join(5), listener.close(),
                                 os.path.exists(str(path)) and os.unlink(str(path))))
        return calls

    def test_sign_through_arc_or_wait(self):
        """Sign=yes: the report message goes to io.halyard.Arc.Sign (content
        as an fd) and the answered DKIM-Signature header is prepended; while
        the signer is not there the report is not sent unsigned: the
        destination retries and goes out signed once the signer answers."""
        arc_path = self.tmp / ("arc-%d" % os.getpid())
        calls = self.fake_signer(arc_path)
        y = yesterday_noon()

        t = self.start("Sign=yes\nSignSelector=test\nArcAddress=unix:%s\n" % arc_path)
        send_records(t, [record("rpt-mail.halyard.test", time=y)])
        rep = t.ok("SendReports", {}, timeout=60)["reports"][0]
        self.assertEqual(rep["result"], "sent", rep)
        self.assertEqual(len(calls), 1)
        call, content = calls[0]
        self.assertEqual(call["method"], "io.halyard.Arc.Sign")
        # d= defaults to the From= domain (DMARC alignment).
        self.assertEqual((call["parameters"]["domain"], call["parameters"]["selector"], call["parameters"]["content"]),
                         ("mta.halyard.test", "test", 0))
        self.assertIn("TLS-Report-Domain", call["parameters"]["headers"])
        self.assertIn(b"TLS-Report-Domain: rpt-mail.halyard.test", content)
        msgs = wait_until(lambda: self.sink_messages("only-mail@reports.halyard.test", rep["reportId"].encode()), 30,
                          what="signed report")
        self.assertTrue(msgs[0]["content"].startswith(b"DKIM-Signature: v=1; a=ed25519-sha256; d=mta.halyard.test"),
                        msgs[0]["content"][:200])
        t.stop()

        # The signer is not there: nothing goes out unsigned, the attempt is
        # retried (RetryInitial=1s) until it answers. SignDomain= sets d=.
        late = self.tmp / ("arc-late-%d" % os.getpid())
        t2 = self.start("Sign=yes\nSignDomain=sign.halyard.test\nArcAddress=unix:%s\nGiveUpAfter=1h\n" % late)
        send_records(t2, [record("rpt-mail.halyard.test", time=y)])
        rep = t2.ok("SendReports", {}, timeout=60)["reports"][0]
        self.assertEqual(rep["result"], "sending", rep)
        self.assertEqual(rep["destinations"][0]["status"], "retrying", rep)
        self.assertIn("DKIM signing through unix:%s failed" % late, rep["destinations"][0]["detail"])
        self.assertNotIn("unsigned", t2.log())
        wait_until(lambda: "TLS report %s for rpt-mail.halyard.test to mailto:only-mail@reports.halyard.test failed, "
                           "retrying" % rep["reportId"] in t2.log(), 10, what="the retry logged")
        time.sleep(1.5)
        self.assertEqual(self.sink_messages("only-mail@reports.halyard.test", rep["reportId"].encode()), [])
        late_calls = self.fake_signer(late)
        msgs = wait_until(lambda: self.sink_messages("only-mail@reports.halyard.test", rep["reportId"].encode()), 30,
                          what="the report, signed once the signer answers")
        self.assertTrue(msgs[0]["content"].startswith(b"DKIM-Signature: "), msgs[0]["content"][:200])
        self.assertEqual(len(msgs), 1)
        self.assertEqual(late_calls[0][0]["parameters"]["domain"], "sign.halyard.test")
        self.assertNotIn("selector", late_calls[0][0]["parameters"])
        wait_until(lambda: t2.ok("ListReports")["reports"][-1]["result"] == "sent", 10, what="the report sent")
        self.assertEqual(t2.ok("ListReports")["reports"][-1]["destinations"][0]["status"], "enqueued")
        t2.stop()

        # A signer answering more than one header field is not believed.
        odd = self.tmp / ("arc-odd-%d" % os.getpid())
        self.fake_signer(odd, "DKIM-Signature: v=1; b=AAAA\r\nBcc: someone@example.com\r\n")
        t3 = self.start("Sign=yes\nArcAddress=unix:%s\nGiveUpAfter=1h\n" % odd)
        send_records(t3, [record("rpt-mail.halyard.test", time=y)])
        rep = t3.ok("SendReports", {}, timeout=60)["reports"][0]
        self.assertEqual((rep["result"], rep["destinations"][0]["status"]), ("sending", "retrying"), rep)
        self.assertIn("not one DKIM-Signature field", rep["destinations"][0]["detail"])

    def test_https_untrusted_certificate_not_sent(self):
        """Without the test CA the endpoint's certificate is not trusted: the
        POST fails (no report body leaves) and is retried."""
        t = self.start("GiveUpAfter=1h\n")
        t.config.write_text(t.config.read_text().replace("TestHttpsCAFile=%s\n" % self.ca, ""))
        t.kill()
        t.start()
        y = yesterday_noon()
        before = len(self.https.posts)
        send_records(t, [record("rpt.halyard.test", time=y, policyStrings=["version: STSv1", "mode: none"])])
        r = t.ok("SendReports", {"day": day_string(y)}, timeout=60)["reports"][0]
        https = [d for d in r["destinations"] if d["uri"].startswith("https:")][0]
        self.assertEqual(https["status"], "retrying", r)
        self.assertRegex(https["detail"], r"(?i)certificate|SSL|peer")
        self.assertEqual(len(self.https.posts), before)

    def test_https_retry_then_drop(self):
        t = self.start()
        y = yesterday_noon()
        send_records(t, [record("rpt-down.halyard.test", time=y)])
        reports = t.ok("SendReports", {"day": day_string(y)}, timeout=60)["reports"]
        self.assertEqual(len(reports), 1)
        r = reports[0]
        self.assertEqual(r["result"], "sending", r)
        self.assertEqual(r["destinations"][0]["status"], "retrying", r)
        self.assertEqual(t.status()["reportsPending"], 1)

        def final():
            rs = t.ok("ListReports")["reports"]
            return rs[0] if rs[0]["result"] == "failed" else None
        done = wait_until(final, 20, interval=0.2, what="report dropped")
        self.assertEqual(done["destinations"][0]["status"], "dropped")
        self.assertGreaterEqual(done["destinations"][0]["attempts"], 2)
        self.assertIn("retrying in", t.log())
        self.assertIn("dropped, still failing", t.log())
        self.assertEqual(t.status()["reportsFailed"], 1)
        t.kill(signal.SIGTERM)
        self.assertEqual(t.proc.returncode, 0, t.log()[-3000:])

    def test_https_retry_succeeds_after_restart(self):
        """A retry pending across a kill -9 resumes from reports.json and the
        outbox."""
        self.https.status = 503
        self.addCleanup(setattr, self.https, "status", 201)
        t = self.start("GiveUpAfter=1h\nRetryInitial=2s\n")
        y = yesterday_noon()
        send_records(t, [record("rpt.halyard.test", time=y, policyStrings=["version: STSv1", "mode: testing"])])
        before = len(self.https.posts)
        r = t.ok("SendReports", {"day": day_string(y)}, timeout=60)["reports"][0]
        https = [d for d in r["destinations"] if d["uri"].startswith("https:")][0]
        self.assertEqual(https["status"], "retrying", r)
        self.assertEqual(https["detail"], "HTTP 503")
        t.kill()
        self.https.status = 201
        t.start()
        wait_until(lambda: [d for d in t.ok("ListReports")["reports"][-1]["destinations"]
                            if d["uri"].startswith("https:")][0]["status"] == "delivered", 20, interval=0.2,
                   what="retry after restart")
        self.assertEqual(len(self.https.posts), before + 2)
        self.assertEqual(json.loads(gzip.decompress(self.https.posts[-1]["body"]))["report-id"], r["reportId"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
