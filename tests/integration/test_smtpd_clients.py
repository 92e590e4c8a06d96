#!/usr/bin/python3
"""halyard-smtpd against real third-party SMTP clients and peers, handing
messages to a real halyard-queued:

- curl's smtp:// client, plain and with STARTTLS required (--ssl-reqd);
  smtps:// (implicit TLS) too
- a private Postfix relaying into halyard-smtpd over verified STARTTLS
- SNI: two names, each with an ECDSA and an RSA certificate signed by a test
  CA made at test time; posttls-finger and openssl s_client see the right
  certificate per name, the default one without SNI, the RSA one of the
  right name for an RSA-only client, the ECDSA one otherwise
- implicit TLS on the submissions listener (smtplib.SMTP_SSL, swaks
  --tls-on-connect, plaintext sent to it), and its AUTH requirement
- swaks --tls (STARTTLS)
- openssl s_client: TLS 1.2 and 1.3 work, TLS 1.1 and 1.0 are refused,
  sessions resume (tickets)
- TLS ends with close_notify after QUIT (Python ssl, openssl s_client)

Every case checks what halyard did: the message in the queue's spool with
its Received: header, the queue listing it, GetStatus counters, or the
exact reply."""

import hashlib
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import time
import unittest

import harness
from harness import VarlinkConn, wait_until
from smtp_peers import PostfixInstance, wait_port
import smtp_peers
from test_queued import Queued
from test_smtpd import SMTPD, Raw, spool_with

TOOL_TIMEOUT = 30

MX = "mx.halyard.test"
OTHER = "mail.other.test"

# RSA listed first for each name: that ECDSA wins within a group is
# halyard's choice, not the configuration's order. pairs[0]'s name (MX) is
# the default.
PAIRS = [(MX, "rsa"), (MX, "ecdsa"), (OTHER, "rsa"), (OTHER, "ecdsa")]

CONFIG = """[Smtpd]
HostName=mx.halyard.test
LocalDomains=example.org
Timeout=30s
TLSCertificates=%s
TLSKeys=%s
""" % (" ".join("%s-%s.crt" % p for p in PAIRS), " ".join("%s-%s.key" % p for p in PAIRS))

PERMIT_CONFIG = CONFIG + "PermitNetworks=127.0.0.0/8\n"

MESSAGE = "From: a@client.test\r\nTo: bob@example.org\r\nSubject: %s\r\n\r\nhello %s\r\n"

# The TLS part of halyard's Received: header.
TLS_RECEIVED = r"\r\n\t\(version=(TLS1\.[23]) cipher=[A-Z0-9-]+\);\r\n"


def run(argv, input=None, env=None, timeout=TOOL_TIMEOUT):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True, timeout=timeout, env=e,
                          stdin=None if input is not None else subprocess.DEVNULL)


def openssl(*args):
    r = run(["openssl"] + list(args))
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(map(str, args)), r.stderr.decode(errors="replace")))


def sha256_fingerprint(pem_text):
    """The colon-separated upper-case SHA-256 of the first certificate in
    pem_text (what posttls-finger prints as fingerprint=)."""
    m = re.search(r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----", pem_text)
    der = ssl.PEM_cert_to_DER_cert(m.group(0))
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


class Env:
    """A test CA and four certificates (made now), one halyard-queued, and
    two halyard-smtpd: 'strict' (submission needs AUTH) and 'permit'
    (PermitNetworks=127.0.0.0/8), each with smtp, submission and
    submissions (implicit TLS) listeners on 127.0.0.1."""

    def __init__(self):
        self.tmp = harness.TempDir()
        try:
            self._setup()
        except BaseException:
            self.stop()
            raise

    def _setup(self):
        self.creds = self.tmp / "creds"
        self.creds.mkdir()
        self.ca = self.tmp / "ca.crt"
        cakey = self.tmp / "ca.key"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/CN=halyard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", cakey, "-out", self.ca)
        self.fingerprints = {}
        for name, alg in PAIRS:
            base = "%s-%s" % (name, alg)
            key, crt, csr = self.creds / (base + ".key"), self.creds / (base + ".crt"), self.tmp / (base + ".csr")
            newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if alg == "ecdsa" else \
                ["-newkey", "rsa:2048"]
            openssl("req", "-new", *newkey, "-nodes", "-subj", "/CN=%s/O=%s" % (name, alg), "-keyout", key,
                    "-out", csr)
            ext = self.tmp / (base + ".ext")
            ext.write_text("subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n" % name)
            openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", cakey, "-CAcreateserial", "-days", "2",
                    "-extfile", ext, "-out", crt)
            self.fingerprints[(name, alg)] = sha256_fingerprint(crt.read_text())
        self.q = Queued(self.tmp).start()
        self.strict = ClientSmtpd(self.tmp, self.q.socket, CONFIG, "strict").start()
        self.permit = ClientSmtpd(self.tmp, self.q.socket, PERMIT_CONFIG, "permit").start()
        # posttls-finger reads a main.cf: its own, nothing from /etc/postfix.
        self.pf_config = self.tmp / "posttls-finger"
        self.pf_config.mkdir()
        (self.pf_config / "main.cf").write_text("compatibility_level = 3.6\nsmtp_dns_support_level = disabled\n")

    def stop(self):
        for s in (getattr(self, "strict", None), getattr(self, "permit", None)):
            if s and s.proc:
                s.stop()
        q = getattr(self, "q", None)
        if q and q.proc and q.proc.poll() is None:
            self.q.kill()
        self.tmp.cleanup()

    # -- what halyard did

    def spool_with(self, marker):
        """The spooled message files that contain marker."""
        return spool_with(self.q.spool, marker)

    def queue_ids(self):
        with self.q.conn() as c:
            c.send("io.halyard.Queue.List", {}, more=True)
            out = []
            while True:
                r = c.recv()
                assert r is not None and "error" not in r, r
                if "message" in r["parameters"]:
                    out.append(r["parameters"]["message"]["queueId"])
                if not r.get("continues"):
                    return out


class ClientSmtpd:
    """One halyard-smtpd with all three listeners on 127.0.0.1 (like
    test_smtpd.Smtpd, which has smtp and submission only)."""

    def __init__(self, tmp, queue_socket, config, name):
        self.tmp = tmp
        self.name = name
        self.port = smtp_peers.free_port()
        self.sub_port = smtp_peers.free_port()
        self.subs_port = smtp_peers.free_port()
        self.varlink = tmp / ("io.halyard.Smtpd-" + name)
        self.config = tmp / (name + ".conf")
        self.config.write_text(config + "Queue=unix:%s\n" % queue_socket)
        self.creds = tmp / "creds"
        self.proc = None
        self.stderr = None

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        env["HALYARD_CONFIG"] = str(self.config)
        env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        argv = [str(SMTPD), "--listen-smtp=127.0.0.1:%d" % self.port,
                "--listen-submission=127.0.0.1:%d" % self.sub_port,
                "--listen-submissions=127.0.0.1:%d" % self.subs_port,
                "--listen-varlink=unix:%s" % self.varlink]
        self.stderr = open(self.tmp / (self.name + ".stderr"), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=env, start_new_session=True)
        harness._live_processes.append(self.proc)
        wait_until(lambda: self.proc.poll() is not None or harness.connectable(self.varlink), 10, what="smtpd")
        if self.proc.poll() is not None:
            raise RuntimeError("smtpd exited: " + self.log())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc in harness._live_processes:
            harness._live_processes.remove(self.proc)
        if self.stderr:
            self.stderr.close()
            self.stderr = None

    def log(self):
        return (self.tmp / (self.name + ".stderr")).read_text(errors="replace")

    def status(self):
        with VarlinkConn(str(self.varlink)) as c:
            r = c.call("io.halyard.Smtpd.GetStatus", {})
        assert "error" not in r, r
        return r["parameters"]

    def rejects(self):
        return {r["reason"]: r["count"] for r in self.status()["rejects"]}

    def listener_totals(self):
        return {l["listener"]: l["total"] for l in self.status()["listeners"]}


ENV = None


def setUpModule():
    global ENV
    ENV = Env()


def tearDownModule():
    if ENV is not None:
        ENV.stop()
    harness.kill_all()


class TestCase(unittest.TestCase):
    maxDiff = None

    def assert_received(self, data, helo, tls):
        """data starts with halyard's Received: header for a message from
        helo over ESMTP (tls=None) or ESMTPS (tls="TLS1.2"/"TLS1.3"/"TLS1.[23]");
        returns the TLS version it names."""
        text = data.decode(errors="replace")
        head = (r"^Received: from %s \(127\.0\.0\.1 \[127\.0\.0\.1\]\)\r\n\tby mx\.halyard\.test \(halyard\) "
                r"with ESMTP%s id [0-9A-Za-z]+-\d+" % (re.escape(helo), "S" if tls else ""))
        if tls:
            m = re.match(head + TLS_RECEIVED, text)
            self.assertTrue(m, text[:300])
            self.assertRegex(m.group(1), "^%s$" % tls)
            return m.group(1)
        self.assertRegex(text, head + r";\r\n")
        return None

    def one_spooled(self, marker, timeout=0):
        if timeout:
            wait_until(lambda: ENV.spool_with(marker), timeout, interval=0.05, what="%r in the spool" % marker)
        msgs = ENV.spool_with(marker)
        self.assertEqual(len(msgs), 1, "%d spooled messages with %r" % (len(msgs), marker))
        return msgs[0]

    def msgfile(self, marker):
        p = ENV.tmp / ("msg-%s" % re.sub(r"\W", "_", marker))
        p.write_bytes((MESSAGE % (marker, marker)).encode())
        return p


# ---- 1. curl -----------------------------------------------------------------


class Curl(TestCase):
    def curl(self, url, marker, *extra):
        return run(["curl", "-sS", "-v", "--max-time", "20", url, "--mail-from", "a@client.test",
                    "--mail-rcpt", "bob@example.org", "--upload-file", self.msgfile(marker)] + list(extra))

    def queued_id(self, r):
        out = r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        m = re.search(r"^< 250 2\.0\.0 Ok: queued as ([0-9A-Z]+)\r?$", out, re.M)
        self.assertTrue(m, out)
        return m.group(1), out

    def test_plain(self):
        r = self.curl("smtp://127.0.0.1:%d/curl.test" % ENV.strict.port, "curl plain")
        qid, out = self.queued_id(r)
        self.assertIn("< 250-STARTTLS", out)
        self.assertNotIn("> STARTTLS", out)
        self.assert_received(self.one_spooled("hello curl plain"), "curl.test", None)
        self.assertIn(qid, ENV.queue_ids())

    def test_starttls_required(self):
        before = ENV.strict.status()["tlsSessions"]
        r = self.curl("smtp://%s:%d/curltls.test" % (MX, ENV.strict.port), "curl starttls", "--ssl-reqd",
                      "--cacert", ENV.ca, "--resolve", "%s:%d:127.0.0.1" % (MX, ENV.strict.port))
        qid, out = self.queued_id(r)
        self.assertIn("> STARTTLS", out)
        self.assertIn("< 220 2.0.0 Ready to start TLS", out)
        # curl sends SNI: the ECDSA certificate of that name, verified against the CA.
        self.assertRegex(out, r"subject: CN=mx\.halyard\.test; ?O=ecdsa")
        self.assertRegex(out, r"SSL connection using TLSv1\.3")
        # The second EHLO, inside TLS, no longer offers STARTTLS.
        after_tls = out.split("< 220 2.0.0 Ready to start TLS", 1)[1]
        self.assertIn("> EHLO curltls.test", after_tls)
        self.assertNotIn("STARTTLS", after_tls)
        self.assertEqual(self.assert_received(self.one_spooled("hello curl starttls"), "curltls.test", "TLS1.3"),
                         "TLS1.3")
        self.assertIn(qid, ENV.queue_ids())
        self.assertEqual(ENV.strict.status()["tlsSessions"], before + 1)

    def test_starttls_required_wrong_ca_fails(self):
        # Not halyard's certificate chain: curl must give up before MAIL,
        # so nothing is queued.
        other_ca = ENV.creds / ("%s-rsa.crt" % OTHER)
        before = ENV.strict.rejects().get("tls-failed", 0)
        r = self.curl("smtp://%s:%d/badca.test" % (MX, ENV.strict.port), "curl bad ca", "--ssl-reqd",
                      "--cacert", other_ca, "--resolve", "%s:%d:127.0.0.1" % (MX, ENV.strict.port))
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("> MAIL FROM", r.stderr.decode(errors="replace"))
        self.assertEqual(ENV.spool_with("hello curl bad ca"), [])
        # curl aborted the handshake with an alert: halyard counts a tls-failed reject.
        wait_until(lambda: ENV.strict.rejects().get("tls-failed", 0) == before + 1, 5, what="tls-failed reject")

    def test_smtps_implicit_tls(self):
        before = ENV.permit.listener_totals()["submissions"]
        r = self.curl("smtps://%s:%d/curlsmtps.test" % (MX, ENV.permit.subs_port), "curl smtps",
                      "--cacert", ENV.ca, "--resolve", "%s:%d:127.0.0.1" % (MX, ENV.permit.subs_port))
        qid, out = self.queued_id(r)
        self.assertNotIn("STARTTLS", out)
        self.assert_received(self.one_spooled("hello curl smtps"), "curlsmtps.test", r"TLS1\.[23]")
        self.assertIn(qid, ENV.queue_ids())
        self.assertEqual(ENV.permit.listener_totals()["submissions"], before + 1)


# ---- 2. Postfix relaying into halyard ----------------------------------------------


class RelayPostfix(PostfixInstance):
    """A private Postfix (smtp_peers.PostfixInstance's layout, stop() and
    log) whose smtpd takes mail from 127.0.0.1 and relays everything to
    halyard at [127.0.0.1]:relay_port, over STARTTLS at the 'secure' level:
    the certificate must chain to ca_file and name mx.halyard.test (a TLS
    policy entry, since the next hop is an address), SNI mx.halyard.test."""

    def __init__(self, relay_port, ca_file):
        smtp_peers._Peer.__init__(self)
        self.port = smtp_peers.free_port()
        self.etc = self.tmp / "etc"
        self.spool = self.tmp / "spool"
        self.data = self.tmp / "data"
        self.log = self.tmp / "postfix.log"
        for d in (self.etc, self.spool, self.data):
            d.mkdir()
        os.chmod(self.tmp, 0o755)
        shutil.chown(self.data, "postfix")
        policy = self.etc / "tls_policy"
        policy.write_text("[127.0.0.1]:%d secure match=%s servername=%s\n" % (relay_port, MX, MX))
        (self.etc / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            "queue_directory = %s\ndata_directory = %s\nmeta_directory = /etc/postfix\n"
            "myhostname = postfix.client.test\nmydomain = client.test\nmydestination =\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
            "relay_domains =\nrelayhost = [127.0.0.1]:%d\n"
            "smtp_dns_support_level = disabled\nsmtp_host_lookup = native\n"
            "alias_maps =\nalias_database =\nlocal_recipient_maps =\nbiff = no\n"
            "smtpd_tls_security_level = none\n"
            "smtp_tls_security_level = secure\nsmtp_tls_CAfile = %s\nsmtp_tls_loglevel = 1\n"
            "smtp_tls_policy_maps = texthash:%s\n"
            "maillog_file = %s\nmaillog_file_prefixes = /tmp\n"
            % (self.spool, self.data, relay_port, ca_file, policy, self.log))
        (self.etc / "master.cf").write_text(
            "127.0.0.1:%d inet n - n - 20 smtpd\n" % self.port +
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
            out = (r.stdout + r.stderr).decode(errors="replace")
            self._cleanup()
            raise RuntimeError("postfix start failed: %s" % out)
        self.started = True
        try:
            wait_port(self.port, timeout=20)
        except Exception:
            self.stop()
            raise


class PostfixRelay(TestCase):
    def test_postfix_relays_over_verified_starttls(self):
        before = ENV.strict.status()
        with RelayPostfix(ENV.strict.port, ENV.ca) as pf:
            with smtplib.SMTP("127.0.0.1", pf.port, timeout=10) as s:
                s.ehlo("inject.test")
                s.sendmail("alice@client.test", ["bob@example.org"], MESSAGE % ("via postfix", "via postfix"))
            try:
                data = self.one_spooled("hello via postfix", timeout=20)
                wait_until(lambda: "status=sent" in pf.log_text(), 10, what="Postfix to log the delivery")
            except AssertionError:
                raise AssertionError("not relayed; Postfix log:\n%s\nhalyard log:\n%s"
                                     % (pf.log_text(), ENV.strict.log()[-3000:]))
            log = pf.log_text()
        # Postfix verified halyard's certificate (CA + name) and said so.
        self.assertRegex(log, r"Verified TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.3 "
                         % ENV.strict.port)
        m = re.search(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent \(250 2\.0\.0 Ok: queued as ([0-9A-Z]+)\)"
                      % ENV.strict.port, log)
        self.assertTrue(m, log)
        self.assertIn(m.group(1), ENV.queue_ids())
        # halyard's Received: is on top of Postfix's own.
        self.assert_received(data, "postfix.client.test", "TLS1.3")
        self.assertEqual(re.findall(rb"^Received: from (\S+) .*\r\n\tby (\S+) ", data, re.M),
                         [(b"postfix.client.test", b"mx.halyard.test"), (b"inject.test", b"postfix.client.test")])
        after = ENV.strict.status()
        self.assertEqual(after["messagesAccepted"], before["messagesAccepted"] + 1)
        self.assertGreaterEqual(after["tlsSessions"], before["tlsSessions"] + 1)


# ---- 3. SNI: certificate selection -------------------------------------------------


class Sni(TestCase):
    def finger(self, sni, match, *extra, port=None):
        """posttls-finger at the 'secure' level against the test CA; returns
        (fingerprint of the certificate seen, its TLS line)."""
        argv = ["posttls-finger", "-c", "-l", "secure", "-F", ENV.ca, "-t", "10", "-T", "10"]
        if sni:
            argv += ["-s", sni]
        argv += list(extra) + ["[127.0.0.1]:%d" % (port or ENV.strict.port), match]
        r = run(argv, env={"MAIL_CONFIG": str(ENV.pf_config)})
        out = (r.stdout + r.stderr).decode(errors="replace")
        m = re.search(r"^posttls-finger: (\w+) TLS connection established to [^:]+:\d+: (.*)$", out, re.M)
        self.assertTrue(m, out)
        self.assertEqual(m.group(1), "Verified", out)
        fp = re.search(r"subject_CN=([^,]+), issuer_CN=halyard test CA, fingerprint=([0-9A-F:]+)", out)
        self.assertTrue(fp, out)
        self.assertEqual(fp.group(1), match, out)
        return fp.group(2), m.group(2)

    def expect(self, got, name, alg):
        want = ENV.fingerprints[(name, alg)]
        if got != want:
            names = {v: k for k, v in ENV.fingerprints.items()}
            self.fail("expected the %s %s certificate, got %s" % (name, alg, names.get(got, got)))

    def test_default_tls13(self):
        for sni, match, name in ((None, MX, MX), (MX, MX, MX), (OTHER, OTHER, OTHER),
                                 ("unknown.test", MX, MX), ("MAIL.OTHER.TEST", OTHER, OTHER)):
            with self.subTest(sni=sni):
                fp, line = self.finger(sni, match)
                self.expect(fp, name, "ecdsa")
                self.assertRegex(line, r"^TLSv1\.3 with cipher .* server-signature ECDSA")

    def test_tls12_rsa_only_client(self):
        for sni, match, name in ((None, MX, MX), (MX, MX, MX), (OTHER, OTHER, OTHER)):
            with self.subTest(sni=sni):
                fp, line = self.finger(sni, match, "-p", ">=TLSv1.2 <=TLSv1.2", "-g", "high",
                                       "-o", "tls_high_cipherlist=aRSA")
                self.expect(fp, name, "rsa")
                self.assertRegex(line, r"^TLSv1\.2 with cipher ECDHE-RSA-")

    def test_tls12_ecdsa_capable_client(self):
        # Offering ECDSA and RSA suites: the ECDSA certificate of the name
        # asked for (not the ECDSA one of another name).
        for sni, match, name in ((None, MX, MX), (MX, MX, MX), (OTHER, OTHER, OTHER)):
            with self.subTest(sni=sni):
                fp, line = self.finger(sni, match, "-p", ">=TLSv1.2 <=TLSv1.2")
                self.expect(fp, name, "ecdsa")
                self.assertRegex(line, r"^TLSv1\.2 with cipher ECDHE-ECDSA-")

    def s_client_cert(self, sni, sigalgs, *extra, port=None):
        """openssl s_client -starttls smtp; returns (fingerprint, output)."""
        argv = ["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % (port or ENV.strict.port),
                "-CAfile", ENV.ca, "-verify_return_error", "-crlf", "-ign_eof", "-sigalgs", sigalgs]
        argv += ["-servername", sni] if sni else ["-noservername"]
        r = run(argv + list(extra), input=b"QUIT\n")
        out = r.stdout.decode(errors="replace")
        # Not checked here: s_client's exit status (1 while halyard closes
        # without close_notify; TlsClosure tests that on its own).
        self.assertIn("Verify return code: 0 (ok)", out, out + r.stderr.decode(errors="replace"))
        self.assertRegex(out, r"\n221 2\.0\.0 ")
        return sha256_fingerprint(out), out

    def test_tls13_rsa_only_client(self):
        rsa = "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256"
        for sni, name in ((None, MX), (MX, MX), (OTHER, OTHER)):
            with self.subTest(sni=sni):
                fp, out = self.s_client_cert(sni, rsa, "-tls1_3")
                self.expect(fp, name, "rsa")
                self.assertIn("Peer signature type: RSA-PSS", out)
                self.assertRegex(out, r"Protocol *: TLSv1\.3")

    def test_tls13_ecdsa_client(self):
        for sni, name in ((None, MX), (MX, MX), (OTHER, OTHER)):
            with self.subTest(sni=sni):
                fp, out = self.s_client_cert(sni, "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256", "-tls1_3")
                self.expect(fp, name, "ecdsa")
                self.assertIn("Peer signature type: ECDSA", out)

    def test_sni_on_implicit_tls(self):
        fp, line = self.finger(OTHER, OTHER, "-w", port=ENV.strict.subs_port)
        self.expect(fp, OTHER, "ecdsa")
        fp, line = self.finger(None, MX, "-w", port=ENV.strict.subs_port)
        self.expect(fp, MX, "ecdsa")


# ---- 4. implicit TLS (submissions) ---------------------------------------------------


def client_context():
    """Verifies the chain against the test CA; the name is checked by the
    tests (smtplib gives the address as server_hostname)."""
    ctx = ssl.create_default_context(cafile=str(ENV.ca))
    ctx.check_hostname = False
    return ctx


def recv_all(sock, timeout=10):
    """Everything until EOF (a reset counts as EOF)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                break
            data += d
    except ConnectionResetError:
        pass
    return data


class ImplicitTls(TestCase):
    def san(self, s):
        return [v for k, v in s.sock.getpeercert()["subjectAltName"] if k == "DNS"]

    def test_smtp_ssl_sends(self):
        before = ENV.permit.status()
        with smtplib.SMTP_SSL("127.0.0.1", ENV.permit.subs_port, timeout=10, context=client_context()) as s:
            self.assertEqual(self.san(s), [MX])
            code, ehlo = s.ehlo("ssl.test")
            self.assertEqual(code, 250)
            self.assertNotIn(b"STARTTLS", ehlo)
            self.assertIn(b"PIPELINING", ehlo)
            self.assertEqual(s.mail("alice@client.test"), (250, b"2.1.0 Ok"))
            self.assertEqual(s.rcpt("bob@example.org"), (250, b"2.1.5 Ok"))
            code, resp = s.data(MESSAGE % ("smtp_ssl", "smtp_ssl"))
            self.assertEqual(code, 250, resp)
            qid = resp.decode().split()[-1]
        self.assert_received(self.one_spooled("hello smtp_ssl"), "ssl.test", r"TLS1\.3")
        self.assertIn(qid, ENV.queue_ids())
        after = ENV.permit.status()
        self.assertEqual(after["messagesAccepted"], before["messagesAccepted"] + 1)
        self.assertEqual(after["tlsSessions"], before["tlsSessions"] + 1)
        totals = {l["listener"]: l["total"] for l in after["listeners"]}
        old = {l["listener"]: l["total"] for l in before["listeners"]}
        self.assertEqual(totals["submissions"], old["submissions"] + 1)

    def test_mail_needs_auth_without_permit(self):
        before = ENV.strict.rejects().get("auth-required", 0)
        with smtplib.SMTP_SSL("127.0.0.1", ENV.strict.subs_port, timeout=10, context=client_context()) as s:
            s.ehlo("noauth.test")
            self.assertEqual(s.mail("alice@client.test"), (530, b"5.7.0 Authentication required"))
            self.assertEqual(s.noop()[0], 250)
        self.assertEqual(ENV.strict.rejects()["auth-required"], before + 1)

    def test_greeting_only_after_handshake(self):
        c = Raw(ENV.strict.subs_port)
        try:
            # Nothing in plaintext: no banner before the TLS handshake.
            self.assertTrue(c.nothing_more(0.5))
            tls = client_context().wrap_socket(c.sock, server_hostname=MX)
            data = b""
            while not data.endswith(b"\r\n"):
                d = tls.recv(4096)
                self.assertTrue(d, "EOF before the greeting")
                data += d
            self.assertEqual(data, b"220 mx.halyard.test ESMTP halyard\r\n")
            self.assertEqual(tls.version(), "TLSv1.3")
            tls.close()
        finally:
            c.close()

    def test_plaintext_to_tls_port(self):
        before = ENV.strict.rejects().get("tls-failed", 0)
        c = Raw(ENV.strict.subs_port)
        try:
            c.send(b"EHLO plain.test\r\n")
            t0 = time.monotonic()
            data = recv_all(c.sock)
            # halyard closes at once (the handshake failed), with no SMTP
            # reply in plaintext.
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIsNone(re.match(rb"\d{3}[ -]", data), data)
            self.assertNotIn(b"220", data)
        finally:
            c.close()
        wait_until(lambda: ENV.strict.rejects().get("tls-failed", 0) == before + 1, 5, what="tls-failed reject")
        self.assertRegex(ENV.strict.log(), r"rejected from 127\.0\.0\.1: tls-failed: TLS handshake failed")


# ---- 5. swaks ---------------------------------------------------------------------------


class Swaks(TestCase):
    def swaks(self, port, marker, *extra):
        r = run(["swaks", "--server", "127.0.0.1", "--port", port, "--from", "s@client.test",
                 "--to", "carol@example.org", "--helo", "swaks.test", "--body", "hello %s" % marker, "--timeout", "20",
                 "--tls-verify", "--tls-ca-path", ENV.ca, "--tls-sni", MX] + list(extra))
        return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")

    def test_starttls(self):
        rc, out = self.swaks(ENV.strict.port, "swaks starttls", "--tls")
        self.assertNotIn("requires Net::SSLeay", out, "swaks needs libnet-ssleay-perl for TLS")
        self.assertEqual(rc, 0, out)
        self.assertIn(" -> STARTTLS", out)
        self.assertIn("<-  220 2.0.0 Ready to start TLS", out)
        m = re.search(r"^=== TLS started with cipher (TLSv1\.[23]):", out, re.M)
        self.assertTrue(m, out)
        self.assertIn('=== TLS peer DN="/CN=mx.halyard.test/O=ecdsa"', out)
        m2 = re.search(r"<~  250 2\.0\.0 Ok: queued as ([0-9A-Z]+)", out)
        self.assertTrue(m2, out)
        version = self.assert_received(self.one_spooled("hello swaks starttls"), "swaks.test", r"TLS1\.[23]")
        self.assertEqual(version, m.group(1).replace("v", ""))
        self.assertIn(m2.group(1), ENV.queue_ids())

    def test_tls_on_connect(self):
        rc, out = self.swaks(ENV.permit.subs_port, "swaks tlsc", "--tls-on-connect")
        self.assertNotIn("requires Net::SSLeay", out, "swaks needs libnet-ssleay-perl for TLS")
        self.assertEqual(rc, 0, out)
        # The handshake comes first, then the greeting, inside TLS.
        self.assertLess(out.index("=== TLS started with cipher"), out.index("<~  220 mx.halyard.test ESMTP halyard"))
        self.assertNotIn("STARTTLS", out)
        m = re.search(r"<~  250 2\.0\.0 Ok: queued as ([0-9A-Z]+)", out)
        self.assertTrue(m, out)
        self.assert_received(self.one_spooled("hello swaks tlsc"), "swaks.test", r"TLS1\.[23]")
        self.assertIn(m.group(1), ENV.queue_ids())

    def test_tls_on_connect_needs_auth(self):
        rc, out = self.swaks(ENV.strict.subs_port, "swaks noauth", "--tls-on-connect")
        self.assertNotIn("requires Net::SSLeay", out, "swaks needs libnet-ssleay-perl for TLS")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("<~* 530 5.7.0 Authentication required", out)
        self.assertEqual(ENV.spool_with("hello swaks noauth"), [])


# ---- 6. openssl s_client: versions, resumption ---------------------------------------------


class OpensslClient(TestCase):
    # The exit status is not checked where the point is something else: it is
    # 1 while halyard closes TLS without close_notify (see TlsClosure).
    def s_client(self, *extra, input=b"QUIT\n"):
        r = run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % ENV.strict.port,
                 "-CAfile", ENV.ca, "-servername", MX, "-crlf", "-ign_eof"] + list(extra), input=input)
        return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")

    def test_tls12_and_tls13(self):
        for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            with self.subTest(version=version):
                rc, out = self.s_client(flag, "-verify_return_error")
                self.assertRegex(out, r"Protocol *: %s\n" % re.escape(version))
                self.assertIn("Verify return code: 0 (ok)", out)
                self.assertRegex(out, r"\n221 2\.0\.0 ")

    def test_tls11_and_tls10_refused(self):
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(flag=flag):
                before = ENV.strict.rejects().get("tls-failed", 0)
                # SECLEVEL=0: the client itself would do TLS 1.1/1.0; halyard must not.
                rc, out = self.s_client(flag, "-cipher", "DEFAULT@SECLEVEL=0")
                self.assertNotEqual(rc, 0, out)
                self.assertIn("Cipher is (NONE)", out)
                self.assertIn("no peer certificate available", out)
                self.assertNotRegex(out, r"\n221 ")
                wait_until(lambda: ENV.strict.rejects().get("tls-failed", 0) == before + 1, 5,
                           what="tls-failed reject")

    def test_resumption(self):
        for flag in ("-tls1_2", "-tls1_3"):
            with self.subTest(flag=flag):
                sess = ENV.tmp / ("sess%s.pem" % flag)
                rc, out = self.s_client(flag, "-sess_out", sess)
                self.assertRegex(out, r"\nNew, TLSv1\.[23], Cipher is ")
                self.assertRegex(out, r"\n221 2\.0\.0 ")
                self.assertTrue(sess.exists() and sess.stat().st_size > 0, out)
                rc, out = self.s_client(flag, "-sess_in", sess)
                self.assertRegex(out, r"\nReused, TLSv1\.[23], Cipher is ")
                self.assertRegex(out, r"\n221 2\.0\.0 ")


class TlsClosure(TestCase):
    """After QUIT, halyard ends TLS with close_notify before closing the
    connection (RFC 8446 6.1, RFC 5246 7.2.1): without it a client cannot
    tell the end of the session from a truncation, and OpenSSL 3 clients
    report an error ("unexpected eof while reading")."""

    def read_line(self, tls):
        data = b""
        while not data.endswith(b"\r\n"):
            d = tls.recv(4096)
            self.assertTrue(d, "EOF after %r" % data)
            data += d
        return data

    def context(self):
        ctx = client_context()
        # Python sets this by default; a client that wants to detect
        # truncation does not.
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        return ctx

    def quit_and_expect_close_notify(self, tls):
        tls.sendall(b"QUIT\r\n")
        self.assertTrue(self.read_line(tls).startswith(b"221 2.0.0 "))
        try:
            rest = tls.recv(4096)
        except ssl.SSLError as e:  # SSLEOFError or UNEXPECTED_EOF_WHILE_READING
            self.fail("halyard closed the TLS connection without close_notify (%s)" % e)
        self.assertEqual(rest, b"")

    def test_close_notify_starttls(self):
        c = Raw(ENV.strict.port)
        try:
            c.reply()
            c.send(b"EHLO close.test\r\n")
            c.reply()
            c.send(b"STARTTLS\r\n")
            self.assertEqual(c.reply(), b"220 2.0.0 Ready to start TLS")
            with self.context().wrap_socket(c.sock, server_hostname=MX) as tls:
                self.quit_and_expect_close_notify(tls)
        finally:
            c.close()

    def test_close_notify_implicit_tls(self):
        c = Raw(ENV.strict.subs_port)
        try:
            with self.context().wrap_socket(c.sock, server_hostname=MX) as tls:
                self.assertTrue(self.read_line(tls).startswith(b"220 "))
                self.quit_and_expect_close_notify(tls)
        finally:
            c.close()

    def test_openssl_s_client_exit_status(self):
        r = run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % ENV.strict.port,
                 "-CAfile", ENV.ca, "-servername", MX, "-crlf", "-ign_eof", "-quiet"], input=b"QUIT\n")
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertIn("221 2.0.0 ", out)
        self.assertNotIn("unexpected eof while reading", out)
        self.assertEqual(r.returncode, 0, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
