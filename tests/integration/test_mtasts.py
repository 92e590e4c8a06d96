#!/usr/bin/python3
"""halyard-queued delivering with MTA-STS (RFC 8461): `_mta-sts` TXT records in
the DNSSEC-signed test zone (tests/dns/fixture.sh), policies served over
HTTPS by a python http.server with a certificate from a test CA (trusted by
queued's libcurl through the MtaStsCAFile= key; the port through the
test-only MtaStsPort= key), a second HTTPS server with a certificate from an
unknown CA, and the Postfix receivers of test_dane.py (good, wrong-name,
expired certificate). Each case asserts whether mail went out and the exact
TLS result recorded through io.halyard.TlsRpt.Record."""

import http.server
import json
import os
import ssl
import threading
import time
import unittest

import harness
from test_dane import EXPIRED, GOOD, WRONG, Pki, Queued, SecureDeliveryBase

ZONE = "halyard.test"
BADCA_IP = "127.0.0.2"


def policy(mode, *mx, max_age=86400):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: %d\r\n" % (mode, "".join("mx: %s\r\n" % m for m in mx), max_age)


class PolicyServer:
    """HTTPS on ip:port; answers GET /.well-known/mta-sts.txt by Host from
    self.responses: host -> (status, content type, body, extra headers)."""

    def __init__(self, ip, port, chain, key):
        self.responses = {}
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                with outer.lock:
                    outer.requests.append((host, self.path))
                    status, ctype, body, headers = outer.responses.get(host, (404, "text/plain", "not here", {}))
                if self.path != "/.well-known/mta-sts.txt":
                    status, body = 404, "no such path"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer((ip, port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(chain), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, host):
        with self.lock:
            return [r for r in self.requests if r[0] == host]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


CASES = ("sts-enforce", "sts-wrongname", "sts-expired", "sts-mxmismatch", "sts-testing", "sts-invalid",
         "sts-404", "sts-redirect", "sts-ctype", "sts-badca", "sts-none", "sts-dane", "sts-cache")


class MtaStsTest(SecureDeliveryBase):

    @classmethod
    def make_certs(cls):
        good = ["mx.%s.%s" % (c, ZONE) for c in CASES if c not in ("sts-wrongname", "sts-expired", "sts-testing")]
        return {
            "good": cls.pki.leaf("good", good),
            "wrong": cls.pki.leaf("wrong", ["not-the-mx.%s" % ZONE]),
            "expired": cls.pki.leaf("expired", ["mx.sts-expired.%s" % ZONE], expired=True),
        }

    @classmethod
    def zone_records(cls, port, pki, certs):
        good = pki.spki_sha256(certs["good"][0])
        ip = {"sts-wrongname": WRONG, "sts-testing": WRONG, "sts-expired": EXPIRED}
        lines = []
        for c in CASES:
            lines += ["%s MX 10 mx.%s" % (c, c), "mx.%s A %s" % (c, ip.get(c, GOOD)),
                      '_mta-sts.%s TXT "v=STSv1; id=20261127T000000;"' % c,
                      "mta-sts.%s A %s" % (c, BADCA_IP if c == "sts-badca" else "127.0.0.1")]
        lines.append("_%d._tcp.mx.sts-dane TLSA 3 1 1 %s" % (port, good))
        # sts-stall: its policy host accepts connections and never answers
        lines += ["sts-stall MX 10 mx.sts-none", '_mta-sts.sts-stall TXT "v=STSv1; id=1;"', "mta-sts.sts-stall A 127.0.0.3"]
        return "\n".join(lines) + "\n", "", ""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            from test_dane import free_port_on
            cls.https_port = free_port_on("127.0.0.1", BADCA_IP)
            _, chain, key = cls.pki.leaf("mtasts", ["mta-sts.%s.%s" % (c, ZONE) for c in CASES])
            cls.https = PolicyServer("127.0.0.1", cls.https_port, chain, key)
            other = Pki(cls.tmp / "otherpki", name="Unknown CA")
            _, bchain, bkey = other.leaf("badca", ["mta-sts.sts-badca.%s" % ZONE])
            cls.https_badca = PolicyServer(BADCA_IP, cls.https_port, bchain, bkey)
        except BaseException:
            super().tearDownClass()
            raise
        r = cls.https.responses
        d = lambda c: "%s.%s" % (c, ZONE)  # noqa: E731
        for c in ("sts-enforce", "sts-wrongname", "sts-expired", "sts-cache", "sts-dane"):
            r["mta-sts." + d(c)] = (200, "text/plain", policy("enforce", "mx." + d(c)), {})
        r["mta-sts." + d("sts-dane")] = (200, "text/plain", policy("enforce", "elsewhere." + ZONE), {})
        r["mta-sts." + d("sts-mxmismatch")] = (200, "text/plain", policy("enforce", "mx.elsewhere." + ZONE), {})
        r["mta-sts." + d("sts-testing")] = (200, "text/plain; charset=utf-8", policy("testing", "*." + d("sts-testing")), {})
        r["mta-sts." + d("sts-invalid")] = (200, "text/plain", "version: STSv1\r\nmode: sometimes\r\nmax_age: 10\r\n", {})
        r["mta-sts." + d("sts-redirect")] = (301, "text/plain", "moved", {"Location": "https://elsewhere.%s/" % ZONE})
        r["mta-sts." + d("sts-ctype")] = (200, "text/html", policy("enforce", "mx." + d("sts-ctype")), {})
        r["mta-sts." + d("sts-none")] = (200, "text/plain", policy("none"), {})
        cls.https_badca.responses["mta-sts." + d("sts-badca")] = (200, "text/plain", policy("enforce", "*." + ZONE), {})

    @classmethod
    def tearDownClass(cls):
        for s in ("https", "https_badca"):
            if hasattr(cls, s):
                getattr(cls, s).stop()
        super().tearDownClass()

    def config(self, extra=""):
        return super().config("MtaStsCAFile=%s\nMtaStsPort=%d\n%s" % (self.pki.ca_pem, self.https_port, extra))

    def assert_record(self, rec, **want):
        for k, v in want.items():
            self.assertEqual(rec.get(k), v, "%s in %s" % (k, json.dumps(rec)))

    def test_enforce_valid_certificate_delivers(self):
        q = self.start_queued()
        mx = "mx.sts-enforce.halyard.test"
        _, recs = self.expect_delivered(q, "bob@sts-enforce.halyard.test", "sts-enforce", mx)
        self.assert_record(recs[0], policyType="sts", policyDomain="sts-enforce.halyard.test", success=True,
                           mxHosts=[mx], receivingIp=GOOD, sendingMtaIp="127.0.0.1",
                           policyStrings=["version: STSv1", "mode: enforce", "mx: " + mx, "max_age: 86400"])
        self.wait_log(q, r"to=<bob@sts-enforce.halyard.test>.*tls=TLS1.[23] \S+ verified")

    def test_enforce_wrong_name_defers(self):
        q = self.start_queued()
        _, recs, m = self.expect_deferred(q, "bob@sts-wrongname.halyard.test", "sts-wrongname",
                                          "mx.sts-wrongname.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="certificate-host-mismatch",
                           receivingIp=WRONG)

    def test_enforce_expired_defers(self):
        q = self.start_queued()
        _, recs, m = self.expect_deferred(q, "bob@sts-expired.halyard.test", "sts-expired", "mx.sts-expired.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="certificate-expired")

    def test_enforce_mx_not_in_policy_defers(self):
        q = self.start_queued()
        _, recs, m = self.expect_deferred(q, "bob@sts-mxmismatch.halyard.test", "sts-mxmismatch",
                                          "mx.sts-mxmismatch.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="validation-failure",
                           failureReasonCode="mtasts-policy-mx-mismatch", mxHosts=["mx.elsewhere.halyard.test"])
        self.assertIn("not allowed by the MTA-STS policy", m["recipients"][0]["lastError"])

    def test_testing_mode_delivers_and_reports(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-testing.halyard.test", "sts-testing", "mx.sts-testing.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="certificate-host-mismatch",
                           mxHosts=["*.sts-testing.halyard.test"])

    def test_invalid_policy(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-invalid.halyard.test", "sts-invalid", "mx.sts-invalid.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="sts-policy-invalid")

    def test_fetch_error_404(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-404.halyard.test", "sts-404", "mx.sts-404.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="sts-policy-fetch-error",
                           failureReasonCode="bad https response code: 404")
        # A second message soon after: the failure stands, no new fetch (RFC 8461 3.3).
        # (It goes over the kept session, which made its TLS result already.)
        self.send(q, "carol@sts-404.halyard.test", "sts-404-again")
        self.wait(q, lambda: self.delivered("sts-404-again"), "the second message")
        self.wait_log(q, r"MTA-STS policy of sts-404.halyard.test: sts-policy-fetch-error "
                                  r"\(bad https response code: 404 \(not fetched again within 300s\)\)")
        self.assertEqual(len(self.https.hits("mta-sts.sts-404.halyard.test")), 1)

    def test_redirect_refused(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-redirect.halyard.test", "sts-redirect", "mx.sts-redirect.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="sts-policy-fetch-error",
                           failureReasonCode="bad https response code: 301")
        self.assertEqual(self.https.hits("elsewhere.halyard.test"), [])

    def test_wrong_content_type(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-ctype.halyard.test", "sts-ctype", "mx.sts-ctype.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="sts-policy-invalid")

    def test_policy_host_untrusted_certificate(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-badca.halyard.test", "sts-badca", "mx.sts-badca.halyard.test")
        self.assert_record(recs[0], policyType="sts", success=False, resultType="sts-webpki-invalid")

    def test_mode_none(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@sts-none.halyard.test", "sts-none", "mx.sts-none.halyard.test")
        self.assert_record(recs[0], policyType="no-policy-found", success=True)

    def test_dane_wins_over_sts(self):
        q = self.start_queued()
        mx = "mx.sts-dane.halyard.test"
        # the STS policy would refuse this MX; the TLSA record decides
        _, recs = self.expect_delivered(q, "bob@sts-dane.halyard.test", "sts-dane", mx)
        self.assert_record(recs[0], policyType="tlsa", policyDomain=mx, success=True)

    def test_policy_cached_across_restarts(self):
        host = "mta-sts.sts-cache.halyard.test"
        mx = "mx.sts-cache.halyard.test"
        d = harness.TempDir()
        self.addCleanup(d.cleanup)
        q = Queued(d, config=self.config()).start()
        self.addCleanup(lambda: q.proc.poll() is None and q.kill())
        self.expect_delivered(q, "bob@sts-cache.halyard.test", "sts-cache-1", mx)
        self.assertEqual(len(self.https.hits(host)), 1)
        cache = d / "mta-sts" / "sts-cache.halyard.test.json"
        self.assertTrue(cache.exists(), list((d.path).iterdir()))
        stored = json.loads(cache.read_text())
        self.assertEqual(stored["id"], "20261127T000000")
        self.assertIn("mode: enforce", stored["policy"])
        # The policy host goes away; the same id is in DNS: the cache is used,
        # also by a new process.
        saved = self.https.responses[host]
        self.https.responses[host] = (500, "text/plain", "down", {})
        self.addCleanup(lambda: self.https.responses.__setitem__(host, saved))
        q.kill()
        q.start()
        self.send(q, "bob@sts-cache.halyard.test", "sts-cache-2")
        self.wait(q, lambda: self.delivered("sts-cache-2"), "the second message")
        self.wait(q, lambda: len(self.tlsrpt.records(mx=mx)) >= 2, "the second TLS result")
        recs = self.tlsrpt.records(mx=mx)
        self.assert_record(recs[-1], policyType="sts", success=True)
        self.assertEqual(len(self.https.hits(host)), 1, "the cached policy was fetched again")

    def test_fetch_does_not_block_delivery_elsewhere(self):
        # A policy host that accepts but never answers: other destinations
        # are delivered meanwhile (the fetch runs on the event loop).
        import socket
        stall = socket.socket()
        stall.bind(("127.0.0.3", self.https_port))
        stall.listen(8)
        self.addCleanup(stall.close)
        q = self.start_queued()
        qid = self.send(q, "bob@sts-stall.halyard.test", "sts-stall")
        t0 = time.monotonic()
        self.expect_delivered(q, "bob@sts-none.halyard.test", "sts-none-2", "mx.sts-none.halyard.test")
        self.assertLess(time.monotonic() - t0, 15)
        self.assertTrue(qid)


if __name__ == "__main__":
    unittest.main(verbosity=2)
