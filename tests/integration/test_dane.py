#!/usr/bin/python3
"""halyard-queued delivering with DANE (RFC 7672) and per-domain TLS policy
(TLSPolicy=), against real peers only:

- a DNSSEC-signed halyard.test served by nsd and validated by unbound on
  loopback (tests/dns/fixture.sh, keys made with ldns at test time), with
  TLSA records for this run's certificates and port added through
  HALYARD_DNS_EXTRA_RECORDS, one TLSA RRset made bogus after signing, and
  TLSA records in the unsigned child insecure.halyard.test;
- private Postfix instances on 127.0.0.11-14 (one port) presenting a good
  certificate from a test CA, a wrong-name one, an expired one, and none at
  all (no STARTTLS);
- a small varlink listener standing in for halyard-tlsrptd that records the
  oneway io.halyard.TlsRpt.Record calls.

Each case asserts whether the mail went out and the exact TLS result."""

import datetime
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import SOURCE_ROOT, halyardctl, wait_until
from smtp_peers import SmtpSink, wait_port
from test_queued import Queued, enqueue

FIXTURE = SOURCE_ROOT / "tests" / "dns" / "fixture.sh"
ZONE = "halyard.test"


# ---- certificates (python3-cryptography) ------------------------------------------

class Pki:
    """A test CA and leaf certificates; files under dir."""

    def __init__(self, dir, name="Halyard DANE Test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        self.x509, self.hashes, self.ser, self.ec, self.NameOID = x509, hashes, serialization, ec, NameOID
        self.dir = pathlib.Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=30))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_pem = self.dir / ("%s.pem" % name.replace(" ", "_"))
        self.ca_pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def spki_sha256(self, cert=None):
        cert = cert or self.cert
        der = cert.public_key().public_bytes(self.ser.Encoding.DER, self.ser.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()

    def leaf(self, tag, names, expired=False):
        """Returns (cert, chain_pem_path, key_path): the chain file holds leaf + CA."""
        x509, NameOID = self.x509, self.NameOID
        key = self.ec.generate_private_key(self.ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            nb, na = now - datetime.timedelta(days=20), now - datetime.timedelta(days=2)
        else:
            nb, na = now - datetime.timedelta(days=1), now + datetime.timedelta(days=20)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, self.hashes.SHA256()))
        chain = self.dir / ("%s.chain.pem" % tag)
        keyf = self.dir / ("%s.key" % tag)
        chain.write_bytes(cert.public_bytes(self.ser.Encoding.PEM) + self.cert.public_bytes(self.ser.Encoding.PEM))
        keyf.write_bytes(key.private_bytes(self.ser.Encoding.PEM, self.ser.PrivateFormat.TraditionalOpenSSL,
                                           self.ser.NoEncryption()))
        os.chmod(keyf, 0o600)
        return cert, chain, keyf

    def other_key_spki(self):
        """The SPKI digest of a key nobody uses (a TLSA record that matches nothing)."""
        key = self.ec.generate_private_key(self.ec.SECP256R1())
        der = key.public_key().public_bytes(self.ser.Encoding.DER, self.ser.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()


# ---- peers -------------------------------------------------------------------------

class PostfixPeer:
    """A private Postfix whose smtpd listens on ip:port, with STARTTLS using
    chain/key (leaf + CA) or without TLS, relaying everything to relay_port."""

    def __init__(self, tmp, ip, port, relay_port, name, chain=None, key=None):
        self.dir = pathlib.Path(tmp) / ("postfix-" + ip)
        self.etc, self.spool, self.data = self.dir / "etc", self.dir / "spool", self.dir / "data"
        self.log = self.dir / "postfix.log"
        for d in (self.etc, self.spool, self.data):
            d.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        subprocess.run(["chown", "postfix", str(self.data)], check=True)
        tls = ("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n"
               "smtpd_tls_loglevel = 1\n" % (chain, key)) if chain else "smtpd_tls_security_level = none\n"
        (self.etc / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            "queue_directory = %s\ndata_directory = %s\nmeta_directory = /etc/postfix\n"
            "myhostname = %s\nmydestination =\n"
            "inet_interfaces = all\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
            "relayhost = [127.0.0.1]:%d\nsmtp_dns_support_level = disabled\nsmtp_host_lookup = native\n"
            "alias_maps =\nalias_database =\nlocal_recipient_maps =\nbiff = no\nsmtputf8_enable = yes\n"
            "smtp_tls_security_level = none\n%s"
            "maillog_file = %s\nmaillog_file_prefixes = /tmp\n" % (self.spool, self.data, name, relay_port, tls, self.log))
        (self.etc / "master.cf").write_text(
            "%s:%d inet n - n - 20 smtpd\n" % (ip, port) +
            "pickup    unix  n       -       n       60      1       pickup\n"
            "cleanup   unix  n       -       n       -       0       cleanup\n"
            "qmgr      unix  n       -       n       300     1       qmgr\n"
            "rewrite   unix  -       -       n       -       -       trivial-rewrite\n"
            "bounce    unix  -       -       n       -       0       bounce\n"
            "defer     unix  -       -       n       -       0       bounce\n"
            "trace     unix  -       -       n       -       0       bounce\n"
            "verify    unix  -       -       n       -       1       verify\n"
            "flush     unix  n       -       n       1000?   0       flush\n"
            "proxymap  unix  -       -       n       -       -       proxymap\n"
            "smtp      unix  -       -       n       -       -       smtp\n"
            "relay     unix  -       -       n       -       -       smtp\n"
            "error     unix  -       -       n       -       -       error\n"
            "retry     unix  -       -       n       -       -       error\n"
            "discard   unix  -       -       n       -       -       discard\n"
            "anvil     unix  -       -       n       -       1       anvil\n"
            "scache    unix  -       -       n       -       1       scache\n"
            "postlog   unix-dgram n  -       n       -       1       postlogd\n"
            "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
        r = subprocess.run(["postfix", "-c", str(self.etc), "start"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postfix start failed: %s" % (r.stdout + r.stderr).decode(errors="replace"))
        self.started = True
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((ip, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("postfix on %s:%d did not come up" % (ip, port))
                time.sleep(0.05)

    def stop(self):
        if getattr(self, "started", False):
            self.started = False
            subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
            pidfile = self.spool / "pid" / "master.pid"
            try:
                pid = int(pidfile.read_text().strip())
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, 9)
            except (OSError, ValueError):
                pass


class TlsRptListener:
    """Stands in for halyard-tlsrptd: a varlink server on a unix socket that
    records every call (NUL-framed JSON); oneway calls get no reply, others
    get an empty reply."""

    def __init__(self, path):
        self.path = str(path)
        self.calls = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        conn.settimeout(0.1)
        buf = b""
        with conn:
            while not self.stopping.is_set():
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\0" in buf:
                    msg, buf = buf.split(b"\0", 1)
                    call = json.loads(msg)
                    with self.lock:
                        self.calls.append(call)
                    if not call.get("oneway"):
                        conn.sendall(json.dumps({"parameters": {}}).encode() + b"\0")

    def records(self, mx=None, domain=None):
        with self.lock:
            out = [c for c in self.calls if c.get("method") == "io.halyard.TlsRpt.Record"]
        if mx is not None:
            out = [c for c in out if c["parameters"].get("receivingMxHostname") == mx]
        if domain is not None:
            out = [c for c in out if c["parameters"].get("policyDomain") == domain]
        return [c["parameters"] for c in out]

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)


class DnsFixture:
    def __init__(self, tmp, records="", insecure_records="", tamper=""):
        self.dir = pathlib.Path(tmp) / "dns"
        env = dict(os.environ)
        for name, text in (("HALYARD_DNS_EXTRA_RECORDS", records),
                           ("HALYARD_DNS_EXTRA_INSECURE_RECORDS", insecure_records),
                           ("HALYARD_DNS_EXTRA_TAMPER", tamper)):
            if text:
                f = pathlib.Path(tmp) / (name.lower() + ".txt")
                f.write_text(text)
                env[name] = str(f)
        subprocess.run([str(FIXTURE), "start", str(self.dir)], check=True, timeout=60, env=env,
                       stdout=subprocess.DEVNULL)
        out = subprocess.run([str(FIXTURE), "env", str(self.dir)], check=True, timeout=10,
                             capture_output=True, text=True).stdout
        self.env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self):
        subprocess.run([str(FIXTURE), "stop", str(self.dir)], timeout=30, stdout=subprocess.DEVNULL)


def free_port_on(*ips):
    """A TCP port free on every one of ips."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        ok = True
        for ip in ips[1:]:
            with socket.socket() as s:
                try:
                    s.bind((ip, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no common free port")


def flip(hexdigest):
    return hexdigest.translate(str.maketrans("0123456789abcdef", "123456789abcdef0"))


GOOD, WRONG, EXPIRED, PLAIN = "127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"


class SecureDeliveryBase(unittest.TestCase):
    """Shared world: PKI, Postfix peers, the DNS fixture with this run's
    records, the TLS-RPT listener, and queued started per test class."""

    EXTRA_POLICY = ""

    @classmethod
    def zone_records(cls, port, pki, certs):
        raise NotImplementedError

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir(prefix="hyd-")
        os.chmod(cls.tmp.path, 0o755)
        cls.port = free_port_on(GOOD, WRONG, EXPIRED, PLAIN)
        cls.pki = Pki(cls.tmp / "pki")
        cls.certs = cls.make_certs()
        cls.sink = SmtpSink()
        cls.peers = []
        try:
            for ip, tag, name in ((GOOD, "good", "mx-good.test"), (WRONG, "wrong", "mx-wrong.test"),
                                  (EXPIRED, "expired", "mx-expired.test"), (PLAIN, None, "mx-plain.test")):
                chain = key = None
                if tag:
                    _, chain, key = cls.certs[tag]
                cls.peers.append(PostfixPeer(cls.tmp.path, ip, cls.port, cls.sink.port, name, chain, key))
            records, insecure, tamper = cls.zone_records(cls.port, cls.pki, cls.certs)
            cls.dns = DnsFixture(cls.tmp.path, records, insecure, tamper)
        except BaseException:
            cls.stop_peers()
            raise
        cls.tlsrpt = TlsRptListener(cls.tmp / "tlsrpt.sock")

    @classmethod
    def stop_peers(cls):
        for p in cls.peers:
            p.stop()
        cls.sink.stop()

    @classmethod
    def tearDownClass(cls):
        cls.tlsrpt.stop()
        cls.dns.stop()
        cls.stop_peers()
        cls.tmp.cleanup()

    @classmethod
    def make_certs(cls):
        raise NotImplementedError

    def config(self, extra=""):
        e = self.dns.env
        return ("[Queue]\nHostName=queued.halyard.test\nSmtpPort=%d\nRetrySchedule=1h\nSmtpTimeout=20s\n"
                "TLS=may\nTlsRpt=unix:%s\nTLSCAFile=%s\n%s%s\n"
                "[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
                % (self.port, self.tlsrpt.path, self.pki.ca_pem, self.EXTRA_POLICY, extra,
                   e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"]))

    def start_queued(self, extra=""):
        d = harness.TempDir()
        self.addCleanup(d.cleanup)
        q = Queued(d, config=self.config(extra)).start()
        self.addCleanup(lambda: q.proc.poll() is None and q.kill())
        return q

    def delivered(self, tag):
        return [t for t in self.sink.transactions() if ("Subject: %s\r\n" % tag).encode() in t["raw"]
                or ("Subject: %s\n" % tag).encode() in t["raw"]]

    def send(self, q, rcpt, tag, **extra):
        body = ("From: alice@halyard.test\r\nTo: %s\r\nSubject: %s\r\n\r\nbody %s\r\n" % (rcpt, tag, tag)).encode()
        with q.conn() as c:
            r = enqueue(c, body, sender="alice@halyard.test", rcpts=(rcpt,), **extra)
        self.assertNotIn("error", r, r)
        return r["parameters"]["queueId"]

    def wait(self, q, pred, what, timeout=30):
        try:
            return wait_until(pred, timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s\nqueued's log:\n%s\nTLS records: %s" % (
                e, q.log()[-5000:], json.dumps(self.tlsrpt.records(), indent=1)[-4000:])) from None

    def wait_log(self, q, regex, timeout=20):
        """Waits for a line of queued's log to match (the receiver may have
        the message before queued has logged the reply)."""
        import re
        self.wait(q, lambda: re.search(regex, q.log()), "queued to log /%s/" % regex, timeout)

    def show(self, q, qid):
        with q.conn() as c:
            r = c.call("io.halyard.Queue.Show", {"queueId": qid})
        return r["parameters"]["message"] if "parameters" in r and "message" in r.get("parameters", {}) else None

    def expect_delivered(self, q, rcpt, tag, mx):
        qid = self.send(q, rcpt, tag)
        self.wait(q, lambda: self.delivered(tag), "%s at the receiver" % tag)
        recs = self.wait(q, lambda: self.tlsrpt.records(mx=mx), "a TLS result for %s" % mx)
        return qid, recs

    def expect_deferred(self, q, rcpt, tag, mx):
        qid = self.send(q, rcpt, tag)
        recs = self.wait(q, lambda: self.tlsrpt.records(mx=mx), "a TLS result for %s" % mx)

        def deferred():
            m = self.show(q, qid)
            return m and m["state"] == "deferred" and m
        m = self.wait(q, deferred, "%s deferred" % qid)
        self.assertEqual(m["recipients"][0]["state"], "pending")
        time.sleep(0.5)
        self.assertEqual(self.delivered(tag), [], "%s must not have gone out" % tag)
        return qid, recs, m


class DaneTest(SecureDeliveryBase):
    EXTRA_POLICY = "TLSPolicy=danereq.halyard.test=dane-only\n"

    @classmethod
    def make_certs(cls):
        z = ZONE
        good_names = ["mx.%s.%s" % (n, z) for n in ("dane-ee", "dane-ta", "dane-bad", "dane-bogus", "dane-pkix",
                                                      "nodane", "danereq", "dane.insecure", "dane-tlsrep")]
        good_names += ["mx1.dane-two.%s" % z, "mx2.dane-two.%s" % z, "target.dane-cname.%s" % z]
        return {
            "good": cls.pki.leaf("good", good_names),
            "wrong": cls.pki.leaf("wrong", ["not-the-mx.%s" % z]),
            "expired": cls.pki.leaf("expired", ["mx.dane-taexp.%s" % z, "mx.dane-eeexp.%s" % z], expired=True),
        }

    @classmethod
    def zone_records(cls, port, pki, certs):
        good = pki.spki_sha256(certs["good"][0])
        expired = pki.spki_sha256(certs["expired"][0])
        ca = pki.spki_sha256()
        other = pki.other_key_spki()
        cls.good_spki, cls.ca_spki = good, ca
        lines = []

        def host(domain, ip, tlsa=(), mx="mx"):
            lines.append("%s MX 10 %s.%s" % (domain, mx, domain))
            lines.append("%s.%s A %s" % (mx, domain, ip))
            for t in tlsa:
                lines.append("_%d._tcp.%s.%s TLSA %s" % (port, mx, domain, t))
        host("dane-ee", GOOD, ["3 1 1 " + good])
        host("dane-ta", GOOD, ["2 1 1 " + ca])
        host("dane-taname", WRONG, ["2 1 1 " + ca])
        host("dane-taexp", EXPIRED, ["2 1 1 " + ca])
        host("dane-eeexp", EXPIRED, ["3 1 1 " + expired])
        host("dane-bad", GOOD, ["3 1 1 " + other])
        host("dane-plain", PLAIN, ["3 1 1 " + good])
        host("dane-bogus", GOOD, ["3 1 1 " + good])
        host("dane-pkix", GOOD, ["1 1 1 " + good])
        host("dane-tlsrep", GOOD, ["3 1 1 " + other])
        host("nodane", GOOD)
        host("danereq", GOOD)
        lines.append("dane-two MX 10 mx1.dane-two")
        lines.append("dane-two MX 20 mx2.dane-two")
        lines.append("mx1.dane-two A %s" % GOOD)
        lines.append("mx2.dane-two A %s" % GOOD)
        lines.append("_%d._tcp.mx1.dane-two TLSA 3 1 1 %s" % (port, other))
        lines.append("_%d._tcp.mx2.dane-two TLSA 3 1 1 %s" % (port, good))
        # an MX host that is a CNAME: the TLSA base domain is its target (RFC 7672 2.2.2)
        lines.append("dane-cname MX 10 alias.dane-cname")
        lines.append("alias.dane-cname CNAME target.dane-cname")
        lines.append("target.dane-cname A %s" % GOOD)
        lines.append("_%d._tcp.target.dane-cname TLSA 2 1 1 %s" % (port, ca))
        insecure = ["dane MX 10 mx.dane", "mx.dane A %s" % GOOD, "_%d._tcp.mx.dane TLSA 3 1 1 %s" % (port, other)]
        tamper = "_%d._tcp.mx.dane-bogus.%s. TLSA 3 1 1 %s\n" % (port, ZONE, flip(good))
        return "\n".join(lines) + "\n", "\n".join(insecure) + "\n", tamper

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.q = None

    def queued(self):
        # One queued for the whole class: each case has its own domain.
        if DaneTest.q is None or DaneTest.q.proc.poll() is not None:
            d = harness.TempDir()
            DaneTest.qdir = d
            DaneTest.q = Queued(d, config=self.config()).start()
        return DaneTest.q

    @classmethod
    def tearDownClass(cls):
        if cls.q is not None and cls.q.proc.poll() is None:
            cls.q.kill()
            cls.qdir.cleanup()
        super().tearDownClass()

    def assert_record(self, rec, **want):
        for k, v in want.items():
            self.assertEqual(rec.get(k), v, "%s in %s" % (k, json.dumps(rec)))

    def test_dane_ee_match_delivers(self):
        q = self.queued()
        mx = "mx.dane-ee.halyard.test"
        _, recs = self.expect_delivered(q, "bob@dane-ee.halyard.test", "dane-ee", mx)
        self.assertEqual(len(recs), 1, recs)
        self.assert_record(recs[0], policyType="tlsa", policyDomain=mx, success=True,
                           policyStrings=["3 1 1 " + self.good_spki], receivingIp=GOOD,
                           sendingMtaIp="127.0.0.1", receivingMxHelo="mx-good.test")
        self.assertNotIn("resultType", recs[0])
        with self.tlsrpt.lock:
            calls = [c for c in self.tlsrpt.calls if c["parameters"].get("receivingMxHostname") == mx]
        self.assertEqual(calls[0].get("oneway"), True, calls)
        self.wait_log(q, r"TLS result: policy=tlsa domain=%s mx=%s ip=%s result=success" % (mx, mx, GOOD))
        self.wait_log(q, r"to=<bob@dane-ee.halyard.test>.*tls=TLS1.[23] \S+ verified")

    def test_dane_ta_match_delivers(self):
        q = self.queued()
        mx = "mx.dane-ta.halyard.test"
        _, recs = self.expect_delivered(q, "bob@dane-ta.halyard.test", "dane-ta", mx)
        self.assert_record(recs[0], policyType="tlsa", policyDomain=mx, success=True,
                           policyStrings=["2 1 1 " + self.ca_spki])

    def test_dane_ta_wrong_name_is_host_mismatch(self):
        q = self.queued()
        mx = "mx.dane-taname.halyard.test"
        _, recs, m = self.expect_deferred(q, "bob@dane-taname.halyard.test", "dane-taname", mx)
        self.assert_record(recs[0], policyType="tlsa", success=False, resultType="certificate-host-mismatch",
                           receivingIp=WRONG)
        self.assertIn("DANE", m["recipients"][0]["lastError"])

    def test_dane_ta_expired_is_certificate_expired(self):
        q = self.queued()
        mx = "mx.dane-taexp.halyard.test"
        _, recs, _ = self.expect_deferred(q, "bob@dane-taexp.halyard.test", "dane-taexp", mx)
        self.assert_record(recs[0], policyType="tlsa", success=False, resultType="certificate-expired")

    def test_dane_ee_ignores_expiry(self):
        q = self.queued()
        mx = "mx.dane-eeexp.halyard.test"
        _, recs = self.expect_delivered(q, "bob@dane-eeexp.halyard.test", "dane-eeexp", mx)
        self.assert_record(recs[0], policyType="tlsa", success=True, receivingIp=EXPIRED)

    def test_tlsa_mismatch_is_tlsa_invalid(self):
        q = self.queued()
        mx = "mx.dane-bad.halyard.test"
        _, recs, m = self.expect_deferred(q, "bob@dane-bad.halyard.test", "dane-bad", mx)
        self.assert_record(recs[0], policyType="tlsa", policyDomain=mx, success=False, resultType="tlsa-invalid")
        self.assertIn("tlsa-invalid", m["recipients"][0]["lastError"])

    def test_no_starttls_with_tlsa_is_not_plaintext(self):
        q = self.queued()
        mx = "mx.dane-plain.halyard.test"
        _, recs, m = self.expect_deferred(q, "bob@dane-plain.halyard.test", "dane-plain", mx)
        self.assert_record(recs[0], policyType="tlsa", success=False, resultType="starttls-not-supported",
                           receivingIp=PLAIN, receivingMxHelo="mx-plain.test")
        self.assertIn("TLS is required", m["recipients"][0]["lastError"])

    def test_bogus_tlsa_skips_host(self):
        q = self.queued()
        mx = "mx.dane-bogus.halyard.test"
        _, recs, m = self.expect_deferred(q, "bob@dane-bogus.halyard.test", "dane-bogus", mx)
        self.assert_record(recs[0], policyType="tlsa", policyDomain=mx, success=False, resultType="dnssec-invalid",
                           receivingIp=GOOD)
        self.assertNotIn("sendingMtaIp", recs[0])  # no connection was made
        self.assertIn("bogus", m["recipients"][0]["lastError"])

    def test_bogus_mx_is_dnssec_invalid(self):
        q = self.queued()
        # bogusmx.halyard.test's MX RRset is altered after signing (tests/dns/fixture.sh)
        qid = self.send(q, "bob@bogusmx.halyard.test", "bogus-mx")
        recs = self.wait(q, lambda: self.tlsrpt.records(domain="bogusmx.halyard.test"), "a TLS result")
        self.assertEqual(recs, [{"policyDomain": "bogusmx.halyard.test", "policyType": "tlsa", "success": False,
                                 "resultType": "dnssec-invalid",
                                 "failureReasonCode": "MX lookup failed DNSSEC validation"}])
        self.wait(q, lambda: (self.show(q, qid) or {}).get("state") == "deferred", "deferred")
        self.assertEqual(self.delivered("bogus-mx"), [])

    def test_unusable_tlsa_means_encrypted_unauthenticated(self):
        q = self.queued()
        mx = "mx.dane-pkix.halyard.test"
        _, recs = self.expect_delivered(q, "bob@dane-pkix.halyard.test", "dane-pkix", mx)
        self.assert_record(recs[0], policyType="tlsa", success=True, policyStrings=["1 1 1 " + self.good_spki])
        self.wait_log(q, r"to=<bob@dane-pkix.halyard.test>.*tls=TLS1.[23] ")

    def test_next_mx_after_dane_failure(self):
        q = self.queued()
        self.expect_delivered(q, "bob@dane-two.halyard.test", "dane-two", "mx2.dane-two.halyard.test")
        r1 = self.tlsrpt.records(mx="mx1.dane-two.halyard.test")
        r2 = self.tlsrpt.records(mx="mx2.dane-two.halyard.test")
        self.assert_record(r1[0], policyType="tlsa", success=False, resultType="tlsa-invalid")
        self.assert_record(r2[0], policyType="tlsa", success=True)
        self.wait_log(q, r"to=<bob@dane-two.halyard.test>, relay=mx2.dane-two.halyard.test")

    def test_cname_mx_uses_the_target_as_tlsa_base(self):
        q = self.queued()
        mx = "alias.dane-cname.halyard.test"
        _, recs = self.expect_delivered(q, "bob@dane-cname.halyard.test", "dane-cname", mx)
        self.assert_record(recs[0], policyType="tlsa", policyDomain="target.dane-cname.halyard.test", success=True,
                           policyStrings=["2 1 1 " + self.ca_spki])

    def test_no_tlsa_is_no_policy_found(self):
        q = self.queued()
        mx = "mx.nodane.halyard.test"
        _, recs = self.expect_delivered(q, "bob@nodane.halyard.test", "nodane", mx)
        self.assert_record(recs[0], policyType="no-policy-found", policyDomain="nodane.halyard.test", success=True)

    def test_insecure_tlsa_is_ignored(self):
        q = self.queued()
        mx = "mx.dane.insecure.halyard.test"
        # the TLSA there matches nothing: used, it would block delivery
        _, recs = self.expect_delivered(q, "bob@dane.insecure.halyard.test", "dane-insecure", mx)
        self.assert_record(recs[0], policyType="no-policy-found", success=True)

    def test_dane_only_without_tlsa_is_dane_required(self):
        q = self.queued()
        mx = "mx.danereq.halyard.test"
        _, recs, m = self.expect_deferred(q, "bob@danereq.halyard.test", "danereq", mx)
        self.assert_record(recs[0], policyType="tlsa", success=False, resultType="dane-required")
        self.assertIn("DANE required", m["recipients"][0]["lastError"])

    def test_tls_reports_themselves_are_not_recorded(self):
        q = self.queued()
        mx = "mx.dane-tlsrep.halyard.test"
        # The TLSA there matches nothing: an ordinary message waits ...
        _, recs, _ = self.expect_deferred(q, "bob@dane-tlsrep.halyard.test", "not-a-report", mx)
        self.assertEqual(len(recs), 1, recs)
        self.assert_record(recs[0], resultType="tlsa-invalid")
        # ... a TLS report is delivered anyway (RFC 8460 5.3.1), over
        # opportunistic TLS, and makes no TLS result of its own.
        qid = self.send(q, "tlsrpt@dane-tlsrep.halyard.test", "tls-report", tlsReport=True)
        self.wait(q, lambda: self.delivered("tls-report"), "the report at the receiver")
        self.wait(q, lambda: ("%s: TLS result: policy=no-policy-found" % qid) in q.log(), "the logged result")
        self.wait_log(q, r"%s: to=<tlsrpt@dane-tlsrep.halyard.test>.*tls=TLS1.[23] " % qid)
        time.sleep(0.5)
        self.assertEqual(len(self.tlsrpt.records(mx=mx)), 1, self.tlsrpt.records(mx=mx))

    def test_queue_show_displays_the_tls_policy(self):
        q = self.queued()
        mx = "mx.dane-bad.halyard.test"
        qid = self.send(q, "carol@dane-bad.halyard.test", "show-policy")
        self.wait(q, lambda: (self.show(q, qid) or {}).get("state") == "deferred", "deferred")
        m = self.show(q, qid)
        self.assertEqual(m["destinations"], [{"domain": "dane-bad.halyard.test",
                                               "tlsPolicy": "dane: tlsa %s (authenticated)" % mx}])
        r = halyardctl("--runtime-dir=%s" % self.qdir.path, "queue", "show", qid)
        self.assertEqual(r.rc, 0, r)
        self.assertIn("TLS policy for dane-bad.halyard.test: dane: tlsa %s (authenticated)" % mx, r.stdout)


class TlsPolicyTest(SecureDeliveryBase):
    """TLSPolicy= levels for destinations (Postfix smtp_tls_policy_maps style)."""

    EXTRA_POLICY = ("TLSPolicy=verifyok.halyard.test=verify verifybad.halyard.test=verify "
                    "encplain.halyard.test=encrypt none.halyard.test=none .sub.halyard.test=encrypt\n")

    @classmethod
    def make_certs(cls):
        z = ZONE
        return {
            "good": cls.pki.leaf("good", ["mx.verifyok.%s" % z, "mx.none.%s" % z]),
            "wrong": cls.pki.leaf("wrong", ["not-the-mx.%s" % z]),
            "expired": cls.pki.leaf("expired", ["mx.verifyexp.%s" % z], expired=True),
        }

    @classmethod
    def zone_records(cls, port, pki, certs):
        good = pki.spki_sha256(certs["good"][0])
        lines = []
        for domain, ip in (("verifyok", GOOD), ("verifybad", WRONG), ("encplain", PLAIN), ("none", GOOD),
                           ("x.sub", PLAIN)):
            lines += ["%s MX 10 mx.%s" % (domain, domain), "mx.%s A %s" % (domain, ip)]
        # a TLSA that matches nothing: the "none" level must not look at it
        lines.append("_%d._tcp.mx.none TLSA 3 1 1 %s" % (port, flip(good)))
        return "\n".join(lines) + "\n", "", ""

    def test_levels(self):
        q = self.start_queued()
        _, recs = self.expect_delivered(q, "bob@verifyok.halyard.test", "verifyok", "mx.verifyok.halyard.test")
        self.assertEqual(recs[0]["policyType"], "no-policy-found")
        self.assertTrue(recs[0]["success"], recs)
        self.wait_log(q, r"to=<bob@verifyok.halyard.test>.*tls=TLS1.[23] \S+ verified")

        _, recs, m = self.expect_deferred(q, "bob@verifybad.halyard.test", "verifybad", "mx.verifybad.halyard.test")
        self.assertEqual(recs[0]["resultType"], "certificate-host-mismatch", recs)

        _, recs, m = self.expect_deferred(q, "bob@encplain.halyard.test", "encplain", "mx.encplain.halyard.test")
        self.assertEqual(recs[0]["resultType"], "starttls-not-supported", recs)

        _, recs, m = self.expect_deferred(q, "bob@x.sub.halyard.test", "subdomain", "mx.x.sub.halyard.test")
        self.assertEqual(recs[0]["resultType"], "starttls-not-supported", recs)

        qid = self.send(q, "bob@none.halyard.test", "level-none")
        self.wait(q, lambda: self.delivered("level-none"), "level-none at the receiver")
        self.wait_log(q, r"to=<bob@none.halyard.test>.*tls=none")
        self.assertEqual(self.tlsrpt.records(mx="mx.none.halyard.test"), [])

    def test_bad_policy_refused(self):
        d = harness.TempDir()
        self.addCleanup(d.cleanup)
        (d / "bad.conf").write_text("[Queue]\nTLSPolicy=example.org=sometimes\n")
        r = subprocess.run([str(harness.BUILD_ROOT / "services" / "queued" / "halyard-queued"), "--check",
                            "--config=%s" % (d / "bad.conf")], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.conf:2: error: invalid TLSPolicy= entry \"example.org=sometimes\"", r.stderr)

    def test_tlsrpt_absent_never_holds_up_delivery(self):
        q = self.start_queued("TlsRpt=unix:%s\n" % (self.tmp / "nobody-listens.sock"))
        self.send(q, "bob@verifyok.halyard.test", "no-tlsrptd")
        self.wait(q, lambda: self.delivered("no-tlsrptd"), "no-tlsrptd at the receiver")
        self.wait_log(q, r"TLS result: policy=no-policy-found domain=verifyok\.halyard\.test")


if __name__ == "__main__":
    unittest.main(verbosity=2)
