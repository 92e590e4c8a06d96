#!/usr/bin/python3
"""TLS reporting end to end, real processes only: halyard-queued delivers
with DANE and MTA-STS (the world of test_dane.py and test_mtasts.py: a
DNSSEC-signed halyard.test on loopback nsd/unbound, private Postfix
receivers with good and wrong-name certificates, an HTTPS MTA-STS policy
server with a test CA) and sends its TLS results to a real halyard-tlsrptd
(TlsRpt= pointing at its socket). Four destinations:

- e2e-dane-ok:  TLSA 3 1 1 matching the MX certificate      -> delivered, tlsa success
- e2e-dane-bad: TLSA 3 1 1 of a key nobody uses              -> deferred, tlsa-invalid
- e2e-sts-ok:   MTA-STS enforce, the MX certificate matches  -> delivered, sts success
- e2e-sts-bad:  MTA-STS enforce, the MX has a wrong-name one -> deferred, certificate-host-mismatch

each publishing `_smtp._tls` with mailto: and/or https: rua. SendReports
for today (the day may be given, today included) builds one report per
policy domain; the mailto: one goes through the same halyard-queued to a
domain whose TLSA record matches nothing (a report is delivered anyway, over
opportunistic TLS, RFC 8460 5.3.1) and on through a Postfix to smtp-sink,
where it is decoded, gunzipped and checked with tlsrpt_check.py and exact
expectations; the https: one is POSTed to a local HTTPS endpoint with the
same content. The report mail makes no TLS result of its own.

With halyard-arcd in the build, the report mail is signed through
io.halyard.Arc.Sign by a real arcd holding an Ed25519 and an RSA key from
credentials, and dkimpy verifies what arrived against the public keys
published in the signed zone (read through the loopback validating
resolver); a key arcd does not have keeps the report waiting, unsent."""

import base64
import email
import email.policy
import gzip
import json
import os
import re
import subprocess
import time
import unittest

import harness
import tlsrpt_check
from harness import BUILD_ROOT, wait_until
from test_dane import GOOD, WRONG, ZONE, Queued, SecureDeliveryBase
from test_mtasts import PolicyServer, policy
from test_tlsrptd import BASE_CONFIG, HttpsEndpoint, Tlsrptd, send_records

ARCD = BUILD_ROOT / "services" / "arcd" / "halyard-arcd"
REPORTS_TO = "tlsrpt@e2e-reports.%s" % ZONE
RUA_MAIL = "mailto:" + REPORTS_TO
RUA_HTTPS = "https://rpt.%s/v1/report" % ZONE
SUBMITTER = "mta.halyard.test"

# policy domain -> rua list ("mailto" and/or "https")
RUA = {
    "mx.e2e-dane-ok.%s" % ZONE: (RUA_MAIL, RUA_HTTPS),
    "mx.e2e-dane-bad.%s" % ZONE: (RUA_MAIL,),
    "e2e-sts-ok.%s" % ZONE: (RUA_HTTPS,),
    "e2e-sts-bad.%s" % ZONE: (RUA_MAIL, RUA_HTTPS),
}


def mx(name):
    return "mx.%s.%s" % (name, ZONE)


class Arcd:
    """A halyard-arcd under systemd-socket-activate with keys given as
    credentials ($CREDENTIALS_DIRECTORY), as the unit does with
    LoadCredential=."""

    def __init__(self, tmp, config, creds):
        self.tmp = tmp
        self.socket = tmp / "io.halyard.Arc"
        self.config = tmp / "halyard.conf"
        self.config.write_text(config)
        self.creds = tmp / "credentials"
        self.creds.mkdir()
        for name, data in creds.items():
            (self.creds / name).write_bytes(data)
            os.chmod(self.creds / name, 0o400)

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        argv = [harness.SOCKET_ACTIVATE, "-l", str(self.socket), "--fdname=varlink",
                "-E", "HALYARD_CONFIG=%s" % self.config, "-E", "CREDENTIALS_DIRECTORY=%s" % self.creds, str(ARCD)]
        self.stderr = open(self.tmp / "arcd.stderr", "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=env, start_new_session=True)
        harness._live_processes.append(self.proc)
        wait_until(lambda: self.proc.poll() is not None or harness.connectable(self.socket), 10, what="arcd socket")
        return self

    def log(self):
        return (self.tmp / "arcd.stderr").read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stderr.close()


def sink_message(raw):
    """The message as the receiver got it from a smtp-sink dump: smtp-sink
    writes its X- lines and its own Received: field first, then the data as
    it came (line ends normalised to CRLF here, as they were on the wire)."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    i = 0
    while i < len(lines) and lines[i].startswith(b"X-"):
        i += 1
    assert lines[i].startswith(b"Received: "), raw[:500]
    i += 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


class TlsRptEndToEndTest(SecureDeliveryBase):

    @classmethod
    def make_certs(cls):
        good = [mx(n) for n in ("e2e-dane-ok", "e2e-dane-bad", "e2e-sts-ok", "e2e-reports")]
        return {
            "good": cls.pki.leaf("good", good),
            "wrong": cls.pki.leaf("wrong", ["not-the-mx.%s" % ZONE]),
            "expired": cls.pki.leaf("expired", ["mx.e2e-expired.%s" % ZONE], expired=True),
        }

    @classmethod
    def zone_records(cls, port, pki, certs):
        cls.good_spki = pki.spki_sha256(certs["good"][0])
        other = pki.other_key_spki()
        lines = []
        for name, ip, tlsa in (("e2e-dane-ok", GOOD, cls.good_spki), ("e2e-dane-bad", GOOD, other),
                               ("e2e-sts-ok", GOOD, None), ("e2e-sts-bad", WRONG, None),
                               ("e2e-reports", GOOD, other)):
            lines += ["%s MX 10 mx.%s" % (name, name), "mx.%s A %s" % (name, ip)]
            if tlsa:
                lines.append("_%d._tcp.mx.%s TLSA 3 1 1 %s" % (port, name, tlsa))
            else:
                lines += ['_mta-sts.%s TXT "v=STSv1; id=20261127T000000;"' % name, "mta-sts.%s A 127.0.0.1" % name]
        for domain, rua in RUA.items():
            lines.append('_smtp._tls.%s. TXT "v=TLSRPTv1; rua=%s"' % (domain, ",".join(rua)))
        cls.dkim_records = cls.dkim_keys()
        for owner, txt in cls.dkim_records.items():
            # <= 255 octets per character-string
            lines.append("%s. TXT %s" % (owner, " ".join('"%s"' % txt[i:i + 250] for i in range(0, len(txt), 250))))
        return "\n".join(lines) + "\n", "", ""

    @classmethod
    def dkim_keys(cls):
        """Signing keys for the arcd run (PEM, for credentials) and their
        DNS records: owner -> TXT text."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
        ed = ed25519.Ed25519PrivateKey.generate()
        rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # noqa: E731
                                        serialization.NoEncryption())
        cls.dkim_pem = {"ed": pem(ed), "rsa": pem(rs)}
        ed_pub = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        rsa_pub = rs.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return {
            "e2e-ed._domainkey.%s" % SUBMITTER: "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub).decode(),
            "e2e-rsa._domainkey.%s" % SUBMITTER: "v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub).decode(),
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            from test_dane import free_port_on
            cls.sts_port = free_port_on("127.0.0.1")
            _, chain, key = cls.pki.leaf("mtasts", ["mta-sts.e2e-sts-ok.%s" % ZONE, "mta-sts.e2e-sts-bad.%s" % ZONE])
            cls.sts = PolicyServer("127.0.0.1", cls.sts_port, chain, key)
            for name in ("e2e-sts-ok", "e2e-sts-bad"):
                cls.sts.responses["mta-sts.%s.%s" % (name, ZONE)] = (200, "text/plain", policy("enforce", mx(name)), {})
            _, chain, key = cls.pki.leaf("rpt", ["rpt.%s" % ZONE])
            cls.https = HttpsEndpoint(str(chain), str(key))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for s in ("sts", "https"):
            if hasattr(cls, s):
                getattr(cls, s).stop()
        super().tearDownClass()

    # ---- the pieces --------------------------------------------------------------

    def start_tlsrptd(self, extra=""):
        e = self.dns.env
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        config = (BASE_CONFIG + "ContactInfo=tlsrpt-contact@%s\nFrom=tlsrpt@%s\nQueueAddress=unix:%s\n"
                  "TestHttpsCAFile=%s\nTestHttpsConnectTo=rpt.%s:443:127.0.0.1:%d\n"
                  "RetryInitial=1s\nRetryMax=2s\nHttpsTimeout=10s\n%s"
                  "[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
                  % (SUBMITTER, SUBMITTER, tmp / "queued" / "io.halyard.Queue", self.pki.ca_pem, ZONE,
                     self.https.port, extra, e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"]))
        (tmp / "tlsrptd").mkdir()
        t = Tlsrptd(tmp / "tlsrptd", config).start()
        self.addCleanup(t.stop)
        # queued next to it: TlsRpt= is tlsrptd's socket, MTA-STS through the
        # test CA and the policy server's port.
        (tmp / "queued").mkdir()
        q_config = self.config("MtaStsCAFile=%s\nMtaStsPort=%d\n" % (self.pki.ca_pem, self.sts_port))
        q_config = q_config.replace("TlsRpt=unix:%s\n" % self.tlsrpt.path, "TlsRpt=unix:%s\n" % t.socket)
        self.assertIn("TlsRpt=unix:%s\n" % t.socket, q_config)
        q = Queued(tmp / "queued", config=q_config).start()
        self.addCleanup(lambda: q.proc.poll() is None and q.kill())
        self.assertEqual(str(q.socket), str(tmp / "queued" / "io.halyard.Queue"))
        return t, q

    def state(self, q, qid):
        return (self.show(q, qid) or {}).get("state")

    def deliver_all(self, t, q, run):
        """The four deliveries; returns when tlsrptd has all four results on disk."""
        before = t.status()["recordsSynced"]
        sent = {}
        for name in ("e2e-dane-ok", "e2e-dane-bad", "e2e-sts-ok", "e2e-sts-bad"):
            sent[name] = self.send(q, "bob@%s.%s" % (name, ZONE), "%s-%s" % (run, name))
        for name in ("e2e-dane-ok", "e2e-sts-ok"):
            self.wait(q, lambda: self.delivered("%s-%s" % (run, name)), "%s at the receiver" % name)
        for name in ("e2e-dane-bad", "e2e-sts-bad"):
            self.wait(q, lambda: self.state(q, sent[name]) == "deferred", "%s deferred" % name)
        self.wait(q, lambda: t.status()["recordsSynced"] - before >= 4, "four TLS results synced in tlsrptd")
        time.sleep(0.5)
        st = t.status()
        self.assertEqual(st["recordsSynced"] - before, 4, t.log()[-3000:])
        self.assertEqual(st["recordsRefused"], 0)
        for name in ("e2e-dane-bad", "e2e-sts-bad"):
            self.assertEqual(self.delivered("%s-%s" % (run, name)), [])
        return st

    def check_report(self, report):
        """tlsrpt_check plus the exact content for this run's four domains."""
        parsed = tlsrpt_check.check_generated(report)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        self.assertEqual((parsed["org"], parsed["contact"]), ("halyard test", "tlsrpt-contact@%s" % SUBMITTER))
        self.assertEqual(parsed["start"].strftime("%Y-%m-%d"), today)
        self.assertEqual(len(parsed["policies"]), 1, report)
        p = parsed["policies"][0]
        d = p["domain"]
        sts = policy("enforce", d and "mx." + d).replace("\r\n", "\n").splitlines()
        want = {
            mx("e2e-dane-ok"): ("tlsa", ["3 1 1 " + self.good_spki], [], 1, 0, []),
            mx("e2e-dane-bad"): ("tlsa", None, [], 0, 1,
                                 [{"result-type": "tlsa-invalid", "receiving-mx-hostname": mx("e2e-dane-bad"),
                                   "receiving-ip": GOOD, "sending-mta-ip": "127.0.0.1",
                                   "receiving-mx-helo": "mx-good.test",
                                   "failure-reason-code": "no TLSA record matches the certificate chain", "count": 1}]),
            "e2e-sts-ok.%s" % ZONE: ("sts", sts, [mx("e2e-sts-ok")], 1, 0, []),
            "e2e-sts-bad.%s" % ZONE: ("sts", sts, [mx("e2e-sts-bad")], 0, 1,
                                      [{"result-type": "certificate-host-mismatch",
                                        "receiving-mx-hostname": mx("e2e-sts-bad"), "receiving-ip": WRONG,
                                        "sending-mta-ip": "127.0.0.1", "receiving-mx-helo": "mx-wrong.test",
                                        "count": 1}]),
        }
        self.assertIn(d, want)
        ptype, strings, mxs, ok, fail, details = want[d]
        self.assertEqual((p["type"], p["mx"], p["ok"], p["fail"]), (ptype, mxs, ok, fail), report)
        if strings is not None:
            self.assertEqual(p["strings"], strings, report)
        else:
            self.assertEqual(len(p["strings"]), 1, report)
            self.assertRegex(p["strings"][0], r"^3 1 1 [0-9a-f]{64}$")
            self.assertNotEqual(p["strings"][0], "3 1 1 " + self.good_spki)
        # Every field exactly, but GnuTLS's wording of a certificate error.
        got = [{k: v for k, v in x.items() if k != "failure-reason-code" or x["result-type"] == "tlsa-invalid"}
               for x in p["details"]]
        self.assertEqual(got, details, report)
        return p

    def report_mails(self):
        out = []
        for tr in self.sink.transactions():
            if any(REPORTS_TO in r for r in tr["rcpts"]):
                out.append(sink_message(tr["raw"]))
        return out

    def mailed_report(self, report_id):
        msgs = [m for m in self.report_mails() if report_id.encode() in m]
        if not msgs:
            return None
        self.assertEqual(len(msgs), 1)
        return msgs[0]

    def decode_report_mail(self, raw, domain):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "tlsrpt")
        self.assertEqual(msg["TLS-Report-Domain"], domain)
        self.assertEqual(msg["TLS-Report-Submitter"], SUBMITTER)
        self.assertEqual(msg["From"].addresses[0].addr_spec, "tlsrpt@%s" % SUBMITTER)
        self.assertEqual(msg["To"].addresses[0].addr_spec, REPORTS_TO)
        att = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        self.assertEqual(len(att), 1)
        self.assertRegex(att[0].get_filename(), r"^%s!%s!\d+!\d+![0-9a-f]+\.json\.gz$"
                         % (re.escape(SUBMITTER), re.escape(domain)))
        return msg, json.loads(gzip.decompress(att[0].get_content()))

    def send_and_check(self, t, q, run):
        """SendReports for today, then every report at every rua, checked.
        Returns the raw report mails."""
        today = time.strftime("%Y-%m-%d", time.gmtime())
        received = t.status()["recordsReceived"]
        reports = t.ok("SendReports", {"day": today}, timeout=90)["reports"]
        by_domain = {r["policyDomain"]: r for r in reports}
        self.assertEqual(set(by_domain), set(RUA), reports)
        for d, rua in RUA.items():
            r = by_domain[d]
            self.assertEqual(r["day"], today)
            self.assertEqual(r["result"], "sent", (r, t.log()[-3000:]))
            self.assertEqual({x["uri"]: x["status"] for x in r["destinations"]},
                             {u: "enqueued" if u.startswith("mailto:") else "delivered" for u in rua}, r)

        mails = {}
        for d, rua in RUA.items():
            rid = by_domain[d]["reportId"]
            posted = mailed = None
            if RUA_HTTPS in rua:
                posts = [p for p in self.https.posts if p["path"] == "/v1/report"
                         and json.loads(gzip.decompress(p["body"]))["report-id"] == rid]
                self.assertEqual(len(posts), 1, rid)
                self.assertEqual(posts[0]["headers"]["Content-Type"], "application/tlsrpt+gzip")
                posted = json.loads(gzip.decompress(posts[0]["body"]))
                self.check_report(posted)
            if RUA_MAIL in rua:
                raw = self.wait(q, lambda: self.mailed_report(rid), "the report for %s at the receiving MTA" % d)
                msg, mailed = self.decode_report_mail(raw, d)
                self.assertEqual(str(msg["Subject"]), "Report Domain: %s Submitter: %s Report-ID: <%s>"
                                 % (d, SUBMITTER, rid))
                self.check_report(mailed)
                mails[d] = raw
            if posted is not None and mailed is not None:
                self.assertEqual(mailed, posted)  # each rua gets the same report
            self.assertEqual((mailed or posted)["report-id"], rid)

        # No reports about reports: the report mail went out through queued
        # (its destination's TLSA matches nothing; a report goes anyway over
        # opportunistic TLS) and made no TLS result: tlsrptd got no Record
        # (a Record for today would now be refused, and still counted).
        time.sleep(1)
        st = t.status()
        self.assertEqual((st["recordsReceived"], st["recordsRefused"]), (received, 0), t.log()[-2000:])
        self.assertEqual((st["reportsSent"], st["reportsFailed"], st["reportsPending"]), (4, 0, 0))
        self.wait_log(q, r"to=<%s>.*tls=TLS1.[23] " % re.escape(REPORTS_TO))
        return reports, mails

    # ---- the tests ---------------------------------------------------------------

    def test_reports_from_real_deliveries(self):
        t, q = self.start_tlsrptd()
        self.deliver_all(t, q, "plain")
        # Preview agrees before anything is sent.
        for d in RUA:
            self.check_report(t.ok("Preview", {"policyDomain": d})["report"])
        reports, mails = self.send_and_check(t, q, "plain")
        for raw in mails.values():
            self.assertNotIn(b"DKIM-Signature", raw.split(b"\r\n\r\n")[0])

    def test_reports_signed_by_arcd_verify(self):
        if not ARCD.exists():
            self.skipTest("no halyard-arcd in this build")
        import dkim
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        e = self.dns.env
        arcd = Arcd(tmp, "[Arc]\nKey=%s e2e-ed dkim-ed %s e2e-rsa dkim-rsa\n"
                    "[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\n"
                    % (SUBMITTER, SUBMITTER, e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"]),
                    {"dkim-ed": self.dkim_pem["ed"], "dkim-rsa": self.dkim_pem["rsa"]}).start()
        self.addCleanup(arcd.stop)
        import dns.resolver
        ip, port = e["HALYARD_DNS_FORWARDER"].split("@")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [ip], int(port)
        asked = []

        def dnsfunc(name, timeout=5):
            """The key from the test zone, through the loopback validating
            resolver (AD set: the DNSSEC-signed record)."""
            name = name.decode() if isinstance(name, bytes) else name
            asked.append(name.rstrip("."))
            resolver.flags = dns.flags.RD | dns.flags.AD
            try:
                ans = resolver.resolve(name, "TXT", lifetime=timeout)
            except dns.exception.DNSException:
                return None
            self.assertTrue(ans.response.flags & dns.flags.AD, name)
            return b"".join(b"".join(r.strings) for r in ans)

        for owner, txt in self.dkim_records.items():
            self.assertEqual(dnsfunc(owner.encode()), txt.encode())
        for selector in ("e2e-ed", "e2e-rsa"):
            with self.subTest(selector=selector):
                t, q = self.start_tlsrptd("Sign=yes\nSignSelector=%s\nArcAddress=unix:%s\n" % (selector, arcd.socket))
                self.deliver_all(t, q, "signed-" + selector)
                reports, mails = self.send_and_check(t, q, "signed-" + selector)
                self.assertTrue(mails)
                del asked[:]
                for d, raw in mails.items():
                    # First after the receiving Postfix's Received: field.
                    self.assertRegex(raw, rb"^Received: [^\r]*(\r\n[ \t][^\r]*)*\r\nDKIM-Signature: ")
                    sig = email.message_from_bytes(raw)["DKIM-Signature"]
                    tags = dict(x.strip().split("=", 1) for x in re.sub(r"\s+", "", sig).split(";") if "=" in x)
                    self.assertEqual((tags["d"], tags["s"]), (SUBMITTER, selector), sig)
                    self.assertIn("tls-report-domain", tags["h"].lower().split(":"))
                    self.assertTrue(dkim.verify(raw, dnsfunc=dnsfunc), "DKIM of the report for %s:\n%s"
                                    % (d, raw[:1500].decode(errors="replace")))
                    # and a changed report does not verify
                    self.assertFalse(dkim.verify(raw.replace(b"TLS-Report-Domain: ", b"TLS-Report-Domain: x"),
                                                 dnsfunc=dnsfunc))
                self.assertEqual(set(asked), {"%s._domainkey.%s" % (selector, SUBMITTER)})
                self.assertNotIn("DKIM signing", t.log())

        # arcd has no such key: the report waits (retrying), it does not go
        # out unsigned.
        t, q = self.start_tlsrptd("Sign=yes\nSignSelector=nokey\nArcAddress=unix:%s\n" % arcd.socket)
        send_records(t, [{"policyDomain": mx("e2e-dane-bad"), "policyType": "tlsa", "success": True,
                          "policyStrings": ["3 1 1 " + self.good_spki]}])
        today = time.strftime("%Y-%m-%d", time.gmtime())
        rep = t.ok("SendReports", {"day": today}, timeout=60)["reports"][0]
        self.assertEqual((rep["result"], rep["destinations"][0]["status"]), ("sending", "retrying"), rep)
        self.assertIn("io.halyard.Arc.NoKey", rep["destinations"][0]["detail"])
        time.sleep(1.5)
        self.assertIsNone(self.mailed_report(rep["reportId"]))
        self.assertGreaterEqual(t.ok("ListReports")["reports"][0]["destinations"][0]["attempts"], 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
