#!/usr/bin/python3
"""halyard-smtpd with halyard-arcd: real arcd (with its keys as credentials),
real smtpd, real halyard-queued, and a real DNSSEC-validating DNS on loopback
(tests/dns/fixture.sh) holding this run's DKIM keys, SPF and DMARC records.
Signatures made by dkimpy are checked by arcd, and what halyard signs and
seals is checked by dkimpy (python3-dkim):

- Authenticate=yes: a dkimpy-signed message from an SPF-permitted address is
  spooled with our Authentication-Results (spf, dkim and dmarc pass) on top
- an incoming Authentication-Results claiming our authserv-id is removed
  (RFC 8601 §5); one of another authserv-id stays
- a message relayed for an ArcSealDomains= domain is ARC-sealed, and
  dkimpy's arc_verify passes on it, in the spool and as delivered by
  halyard-queued to an aiosmtpd next hop
- an authenticated submission gets a DKIM-Signature that dkimpy verifies
- the Halon example policy (ARC::chainValidate, ARC::seal with the
  AuthenticationResults builder) and spf_result()/dkim_result()/
  dmarc_result() work; its seal verifies
- Mail->signDKIM() then ARC::seal() in one handler: the seal covers the
  signature; spf_result() already in mailfrom
- arcd down: ArcFailure=accept spools the message without our header
  (nothing lost), ArcFailure=tempfail answers 451 4.7.0 and spools nothing;
  the policy's builtins answer failed lookups (toString says temperror);
  arcd hung: ArcTimeout= ends the wait, other sessions are served meanwhile
"""

import base64
import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
import unittest

import dkim

import harness
from harness import wait_until
from test_delivery import DnsFixture, Sink
from test_queued import Queued
from test_smtpd import Smtpd, spool_with, yescrypt

ARCD = harness.BUILD_ROOT / "services" / "arcd" / "halyard-arcd"
ZONE = "halyard.test"

# name -> (domain, selector): the keys of this run.
KEYS = {
    "sender": ("sender.halyard.test", "s1"),      # dkimpy signs incoming mail with it
    "arc": ("relay.halyard.test", "arc"),         # arcd seals with it
    "submit": ("submit.halyard.test", "s2026"),   # arcd signs submissions with it
}

POLICY = r'''
// The Halon example (halon-extras/arc, the brief's short form), and the
// per-transaction results as headers the test can read.
on mailfrom {
    $spf = spf_result();
    $context["spf_at_mailfrom"] = $spf["result"] ?? ("error " . ($spf["error"] ?? "?"));
}

on eod {
    $mail = $arguments["mail"];
    $mail->addHeader("X-Test-Mailfrom-SPF", $context["spf_at_mailfrom"] ?? "unset");
    if ($transaction["sender"]["domain"] == "submit.halyard.test")
        $mail->signDKIM("s2026", "submit.halyard.test", "pki:dkim-submit.halyard.test",
                        ["canonicalization" => "simple/simple", "algorithm" => "rsa-sha256"]);
    $spf = spf_result();
    $dmarc = dmarc_result();
    $dkim = dkim_result();
    $mail->addHeader("X-Test-Results", "spf=" . $spf["result"] . " dmarc=" . $dmarc["result"]
                     . " dkim=" . string(length($dkim)) . ":" . ($dkim[0]["result"] ?? "none"));
    $mail->addHeader("X-Test-AR", AuthenticationResults()->SPF()->DKIM()->DMARC()->toString());
    $chain = ARC::chainValidate();
    $mail->addHeader("X-Test-Chain", $chain["status"]);
    if ($chain["status"] == "pass" or $chain["status"] == "none") {
      ARC::seal("arc", "relay.halyard.test", "pki:arc", $chain,
         AuthenticationResults()->SPF(["smtp.client-ip" => $connection["remoteip"]])->DKIM()->DMARC()
           ->addMethod("arc", $chain["status"], ["header.oldest-pass" => $chain["oldestpass"] ?? "0"])->toString());
    }
    Accept();
}
'''


DOWN_POLICY = r'''
// arcd is not there: the results are failed lookups, the builder says
// temperror, and the seal asked for is skipped at commit (ArcFailure=accept).
on eod {
    $mail = $arguments["mail"];
    $spf = spf_result();
    $mail->addHeader("X-Test-Down", $spf["error"] ?? "no error");
    $mail->addHeader("X-Test-AR", AuthenticationResults()->SPF()->DKIM()->toString());
    $chain = ARC::chainValidate();
    ARC::seal("arc", "relay.halyard.test", "pki:arc", $chain, "none");
    Accept();
}
'''


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_key(path):
    openssl("genrsa", "-traditional", "-out", str(path), "2048")
    der = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return base64.b64encode(der).decode()


def txt_rdata(text):
    """A zone-file TXT value split into strings of at most 250 octets."""
    return " ".join('"%s"' % text[i:i + 250] for i in range(0, len(text), 250))


class Arcd:
    def __init__(self, tmp, config, name="arcd"):
        self.tmp = tmp
        self.name = name
        self.socket = tmp / ("io.halyard.Arc-" + name)
        self.config = tmp / (name + ".conf")
        self.config.write_text(config)
        self.creds = tmp / "arcd-creds"
        self.proc = None

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        env["HALYARD_CONFIG"] = str(self.config)
        env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        self.stderr = open(self.tmp / (self.name + ".stderr"), "ab")
        self.proc = subprocess.Popen([str(ARCD), "--listen=unix:%s" % self.socket], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, env=env, start_new_session=True)
        harness._live_processes.append(self.proc)
        wait_until(lambda: self.proc.poll() is not None or harness.connectable(self.socket), 10, what="arcd")
        if self.proc.poll() is not None:
            raise RuntimeError("arcd exited: " + self.log())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()

    def log(self):
        return (self.tmp / (self.name + ".stderr")).read_text(errors="replace")


class ArcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        keydir = cls.tmp / "arcd-creds"
        os.makedirs(keydir, exist_ok=True)
        cls.txt = {}
        records = []
        for name, (domain, selector) in KEYS.items():
            pub = make_key(keydir / (name + ".pem"))
            value = "v=DKIM1; k=rsa; p=" + pub
            cls.txt["%s._domainkey.%s." % (selector, domain)] = value
            records.append("%s._domainkey.%s 300 IN TXT %s" % (selector, domain[:-len(ZONE) - 1], txt_rdata(value)))
        cls.sender_key = (keydir / "sender.pem").read_bytes()
        spf = "v=spf1 ip4:127.0.0.1 -all"
        dmarc = "v=DMARC1; p=reject"
        for d in ("sender", "submit", "relay"):
            records.append('%s 300 IN TXT "%s"' % (d, spf))
            records.append('_dmarc.%s 300 IN TXT "%s"' % (d, dmarc))
            cls.txt["%s.%s." % (d, ZONE)] = spf
            cls.txt["_dmarc.%s.%s." % (d, ZONE)] = dmarc
        extra = cls.tmp / "extra.zone"
        extra.write_text("\n".join(records) + "\n")
        os.environ["HALYARD_DNS_EXTRA_RECORDS"] = str(extra)
        try:
            cls.dns = DnsFixture(cls.tmp)
        finally:
            del os.environ["HALYARD_DNS_EXTRA_RECORDS"]
        e = cls.dns.env
        dns = ("[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
               % (e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"]))
        cls.arcd = Arcd(cls.tmp, "[Arc]\nAuthservId=mx.halyard.test\n"
                        "Key=relay.halyard.test arc arc.pem submit.halyard.test s2026 submit.pem\n"
                        "SealDomain=relay.halyard.test\nSealSelector=arc\n" + dns).start()
        cls.q = Queued(cls.tmp).start()
        creds = cls.tmp / "creds"
        os.makedirs(creds, exist_ok=True)
        (creds / "smtpd-passwd").write_text("carol:%s\n" % yescrypt("carol secret"))
        base = ("[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nRelayDomains=forward.example\n"
                "Timeout=30s\nAuthPlaintext=yes\nArcSocket=unix:%s\n" % cls.arcd.socket)
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, base + "Authenticate=yes\nArcSealDomains=forward.example\n"
                          "DkimSign=yes\n", name="arc", submission=True).start()
        cls.policy = cls.tmp / "policy.hal"
        cls.policy.write_text(POLICY)
        cls.smtpd_policy = Smtpd(cls.tmp, cls.q.socket, base + "Policy=%s\nPolicyTimeout=10s\n" % cls.policy,
                                 name="arc-policy").start()
        down = base.replace(str(cls.arcd.socket), str(cls.tmp / "no-arcd"))
        cls.smtpd_down_accept = Smtpd(cls.tmp, cls.q.socket, down + "Authenticate=yes\nArcSeal=yes\n",
                                      name="arc-down-accept").start()
        # An arcd that accepts connections and never answers.
        cls.hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cls.hung.bind(str(cls.tmp / "hung-arcd"))
        cls.hung.listen(64)
        cls.smtpd_hung = Smtpd(cls.tmp, cls.q.socket, base.replace(str(cls.arcd.socket), str(cls.tmp / "hung-arcd"))
                               + "Authenticate=yes\nArcTimeout=3s\n", name="arc-hung").start()
        # Delivery for real: a queue relaying to an aiosmtpd sink.
        cls.sink = Sink()
        qdir = cls.tmp / "deliver"
        os.makedirs(qdir, exist_ok=True)
        cls.q_deliver = Queued(qdir, config="[Queue]\nHostName=queued.halyard.test\nRelayhost=[127.0.0.1]:%d\n"
                               "RetrySchedule=1s\nSmtpTimeout=10s\nTLS=may\n" % cls.sink.port).start()
        cls.smtpd_deliver = Smtpd(cls.tmp, cls.q_deliver.socket, base + "Authenticate=yes\nArcSealDomains=forward.example\n",
                                  name="arc-deliver").start()
        cls.down_policy = cls.tmp / "down-policy.hal"
        cls.down_policy.write_text(DOWN_POLICY)
        cls.smtpd_down_policy = Smtpd(cls.tmp, cls.q.socket, down + "Policy=%s\n" % cls.down_policy,
                                      name="arc-down-policy").start()
        cls.smtpd_down_tempfail = Smtpd(cls.tmp, cls.q.socket, down + "Authenticate=yes\nArcFailure=tempfail\n",
                                        name="arc-down-tempfail").start()

    @classmethod
    def tearDownClass(cls):
        for s in (cls.smtpd, cls.smtpd_policy, cls.smtpd_down_accept, cls.smtpd_down_tempfail, cls.smtpd_hung,
                  cls.smtpd_down_policy, cls.smtpd_deliver):
            s.stop()
        if cls.q_deliver.proc.poll() is None:
            cls.q_deliver.kill()
        cls.sink.stop()
        cls.hung.close()
        cls.arcd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.dns.stop()
        cls.tmp.cleanup()

    def dnsfunc(self, name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        if not name.endswith("."):
            name += "."
        return self.txt.get(name, "").encode()

    def logs(self):
        return "\n--- arcd:\n%s\n--- smtpd:\n%s\n--- smtpd-policy:\n%s" % (
            self.arcd.log()[-3000:], self.smtpd.log()[-3000:], self.smtpd_policy.log()[-3000:])

    def spooled(self, marker, timeout=10):
        """The spooled content (msg/<id>.data) holding marker."""
        def find():
            return [d for d in spool_with(self.q.spool, marker) if not d.startswith(b"{")]
        try:
            found = wait_until(find, timeout, what="the message in the spool")
        except AssertionError as e:
            raise AssertionError("%s%s" % (e, self.logs())) from None
        self.assertEqual(len(found), 1)
        return found[0]

    def message(self, marker, sender="alice@sender.halyard.test", rcpt="bob@example.org", extra=""):
        return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@sender.halyard.test>\r\n"
                "Date: Fri, 27 Nov 2026 17:00:00 +0000\r\n%s\r\nHello, this is %s.\r\n"
                % (sender, rcpt, marker, marker, extra, marker)).encode()

    def dkimpy_sign(self, msg):
        sig = dkim.sign(msg, b"s1", b"sender.halyard.test", self.sender_key,
                        include_headers=[b"From", b"To", b"Subject", b"Message-ID", b"Date"])
        return sig + msg

    def send(self, smtpd, msg, sender="alice@sender.halyard.test", rcpts=("bob@example.org",), port=None):
        with smtplib.SMTP("127.0.0.1", port or smtpd.port, timeout=30) as s:
            s.ehlo("client.sender.halyard.test")
            return s.sendmail(sender, list(rcpts), msg)

    def our_ar(self, data):
        """Our A-R fields, unfolded."""
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        fields = re.split(r"\r\n(?![ \t])", head)
        return [re.sub(r"\r\n[ \t]+", " ", f.split(":", 1)[1]).strip()
                for f in fields if f.lower().startswith("authentication-results:")]

    def test_authenticate_dkim_pass(self):
        msg = self.dkimpy_sign(self.message("arc-dkim-pass"))
        self.send(self.smtpd, msg)
        data = self.spooled("arc-dkim-pass")
        self.assertTrue(data.startswith(b"Authentication-Results: mx.halyard.test;"), data[:400])
        ar = self.our_ar(data)
        self.assertEqual(len(ar), 1, ar)
        self.assertRegex(ar[0], r"\bdkim=pass\b.*header\.d=sender\.halyard\.test", ar)
        self.assertRegex(ar[0], r"\bspf=pass\b", ar)
        self.assertRegex(ar[0], r"\bdmarc=pass\b", ar)
        # Not relayed for a sealing domain, not a submission: nothing else.
        self.assertNotIn(b"ARC-Seal:", data)
        self.assertEqual(data.count(b"DKIM-Signature:"), 1)
        # What we added does not break the sender's signature.
        self.assertTrue(dkim.verify(data, dnsfunc=self.dnsfunc))

    def test_authenticate_unsigned_spf_fail(self):
        msg = self.message("arc-unsigned", sender="mallory@sender.halyard.test")
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=30, source_address=("127.0.0.2", 0)) as s:
            s.ehlo("client.example")
            s.sendmail("mallory@sender.halyard.test", ["bob@example.org"], msg)
        ar = self.our_ar(self.spooled("arc-unsigned"))
        self.assertEqual(len(ar), 1, ar)
        self.assertRegex(ar[0], r"\bspf=fail\b", ar)
        self.assertRegex(ar[0], r"\bdkim=none\b", ar)
        self.assertRegex(ar[0], r"\bdmarc=fail\b", ar)

    def test_forged_ar_removed(self):
        forged = ("Authentication-Results: mx.halyard.test; dkim=pass header.d=bank.example\r\n"
                  "Authentication-Results: (comment) MX.halyard.test 1;\r\n\tspf=pass smtp.mailfrom=bank.example\r\n"
                  "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n")
        msg = self.message("arc-forged", extra=forged)
        self.send(self.smtpd, msg)
        data = self.spooled("arc-forged")
        self.assertNotIn(b"bank.example", data)
        self.assertIn(b"Authentication-Results: other.example; spf=pass", data)
        ours = [a for a in self.our_ar(data) if a.lower().startswith("mx.halyard.test")]
        self.assertEqual(len(ours), 1, ours)
        self.assertRegex(self.smtpd.log(), r"removed 2 Authentication-Results fields claiming mx\.halyard\.test")

    def test_relay_sealed(self):
        msg = self.dkimpy_sign(self.message("arc-relayed", rcpt="list@forward.example"))
        self.send(self.smtpd, msg, rcpts=("list@forward.example",))
        data = self.spooled("arc-relayed")
        for h in (b"ARC-Seal:", b"ARC-Message-Signature:", b"ARC-Authentication-Results:"):
            self.assertIn(h, data)
        # The seal sits on top and covers our A-R.
        self.assertTrue(data.startswith(b"ARC-Seal: "), data[:300])
        cv, results, reason = dkim.arc_verify(data, dnsfunc=self.dnsfunc)
        self.assertEqual(cv, dkim.CV_Pass, (reason, results, data[:3000]))
        self.assertRegex(data.decode(errors="replace"), r"ARC-Authentication-Results: i=1; mx\.halyard\.test;")
        self.assertRegex(self.smtpd.log(), r"sealed as ARC instance 1 \(cv=none\)")
        # A local recipient alone is not sealed.
        self.send(self.smtpd, self.message("arc-not-relayed"))
        self.assertNotIn(b"ARC-Seal:", self.spooled("arc-not-relayed"))

    def test_relay_sealed_delivered(self):
        # Through halyard-queued to the next hop: what arrives still
        # verifies (the queue's delivery changes nothing the seal covers).
        msg = self.dkimpy_sign(self.message("arc-delivered", rcpt="list@forward.example"))
        self.send(self.smtpd_deliver, msg, rcpts=("list@forward.example",))

        def arrived():
            with self.sink.lock:
                return [m for m in self.sink.messages if b"arc-delivered" in m["content"]]
        try:
            got = wait_until(arrived, 30, what="the message at the next hop")
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.q_deliver.log()[-3000:])) from None
        data = got[0]["content"]
        self.assertEqual(got[0]["rcpts"], ["list@forward.example"])
        self.assertTrue(data.startswith(b"ARC-Seal: i=1;"), data[:300])
        cv, results, reason = dkim.arc_verify(data, dnsfunc=self.dnsfunc)
        self.assertEqual(cv, dkim.CV_Pass, (reason, results))
        self.assertTrue(dkim.verify(data, dnsfunc=self.dnsfunc))
        self.assertRegex(self.our_ar(data)[0], r"^mx\.halyard\.test; .*dkim=pass")

    def test_submission_signed(self):
        msg = self.message("arc-submission", sender="carol@submit.halyard.test", rcpt="dave@elsewhere.example")
        with smtplib.SMTP("127.0.0.1", self.smtpd.submission_port, timeout=30) as s:
            s.ehlo("laptop")
            s.login("carol", "carol secret")
            s.sendmail("carol@submit.halyard.test", ["dave@elsewhere.example"], msg)
        data = self.spooled("arc-submission")
        self.assertTrue(data.startswith(b"DKIM-Signature: "), data[:300])
        self.assertRegex(data.decode(), r"(?s)DKIM-Signature: .*d=submit\.halyard\.test;.*s=s2026;")
        self.assertTrue(dkim.verify(data, dnsfunc=self.dnsfunc), data[:2000])
        # Authenticate=yes judges mail from others, not our own users'.
        self.assertEqual(self.our_ar(data), [])
        # A From domain arcd has no key for goes out unsigned (NoKey is no failure).
        msg = self.message("arc-submission-nokey", sender="carol@other.example", rcpt="dave@elsewhere.example")
        with smtplib.SMTP("127.0.0.1", self.smtpd.submission_port, timeout=30) as s:
            s.ehlo("laptop")
            s.login("carol", "carol secret")
            s.sendmail("carol@other.example", ["dave@elsewhere.example"], msg)
        data = self.spooled("arc-submission-nokey")
        self.assertNotIn(b"DKIM-Signature:", data)

    def arcd_calls(self):
        with harness.VarlinkConn(str(self.arcd.socket)) as c:
            r = c.call("io.halyard.Arc.GetStatus", {})
        return {m["method"]: m["calls"] for m in r["parameters"]["methods"]}

    def test_policy_halon_example(self):
        msg = self.dkimpy_sign(self.message("arc-policy"))
        before = self.arcd_calls()
        self.send(self.smtpd_policy, msg)
        after = self.arcd_calls()
        # One Authenticate for SPF at MAIL FROM, one for the whole message
        # (spf_result, dmarc_result, dkim_result, toString, chainValidate
        # share it), one Seal.
        self.assertEqual(after.get("Authenticate", 0) - before.get("Authenticate", 0), 2, (before, after))
        self.assertEqual(after.get("Seal", 0) - before.get("Seal", 0), 1, (before, after))
        data = self.spooled("arc-policy")
        text = data.decode(errors="replace")
        self.assertIn("X-Test-Results: spf=pass dmarc=pass dkim=1:pass", text)
        self.assertIn("X-Test-Chain: none", text)
        self.assertIn("X-Test-Mailfrom-SPF: pass", text)
        self.assertRegex(text, r"X-Test-AR: mx\.halyard\.test; spf=pass smtp\.mailfrom=alice@sender\.halyard\.test; "
                         r"dkim=pass header\.d=sender\.halyard\.test header\.s=s1 header\.b=\S+; "
                         r"dmarc=pass header\.from=sender\.halyard\.test\r\n")
        self.assertTrue(data.startswith(b"ARC-Seal: "), data[:300])
        self.assertRegex(text, r"ARC-Authentication-Results: i=1; mx\.halyard\.test;[^:]*spf=pass")
        self.assertRegex(text, r"(?s)ARC-Authentication-Results: i=1;.*arc=none header\.oldest-pass=0")
        # Sealed after the policy's own header edits: the seal covers them.
        cv, results, reason = dkim.arc_verify(data, dnsfunc=self.dnsfunc)
        self.assertEqual(cv, dkim.CV_Pass, (reason, results, data[:3000]))
        # Authenticate=no here: no A-R of ours, and the policy's results came
        # from one Authenticate call.
        self.assertFalse(re.search(r"(?m)^Authentication-Results: mx\.halyard\.test", text))

    def test_policy_sign_then_seal(self):
        # Mail->signDKIM() and ARC::seal() in one handler: the signature is
        # made first and the seal covers it.
        msg = self.message("arc-policy-sign", sender="erin@submit.halyard.test")
        self.send(self.smtpd_policy, msg, sender="erin@submit.halyard.test")
        data = self.spooled("arc-policy-sign")
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        names = [l.split(":", 1)[0] for l in head.split("\r\n") if l and l[0] not in " \t"]
        self.assertEqual(names[:4], ["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
                                     "DKIM-Signature"], head)
        signature = re.search(r"(?m)^DKIM-Signature:.*(?:\r\n[ \t].*)*", head).group(0)
        self.assertIn("c=simple/simple;", signature)   # the policy's options reach arcd
        self.assertIn("a=rsa-sha256;", signature)
        self.assertTrue(dkim.verify(data[data.index(b"DKIM-Signature:"):], dnsfunc=self.dnsfunc))
        self.assertTrue(dkim.verify(data, dnsfunc=self.dnsfunc))
        cv, results, reason = dkim.arc_verify(data, dnsfunc=self.dnsfunc)
        self.assertEqual(cv, dkim.CV_Pass, (reason, results))

    def test_policy_sealed_chain_pass(self):
        # A message sealed once by the first smtpd arrives at the policy's
        # smtpd: the chain passes and it seals instance 2.
        msg = self.dkimpy_sign(self.message("arc-chain", rcpt="list@forward.example"))
        self.send(self.smtpd, msg, rcpts=("list@forward.example",))
        first = self.spooled("arc-chain")
        self.send(self.smtpd_policy, first)
        found = wait_until(lambda: [d for d in spool_with(self.q.spool, "ARC-Seal: i=2") if b"arc-chain" in d],
                           10, what="the twice-sealed message")
        data = found[0]
        self.assertIn("X-Test-Chain: pass", data.decode(errors="replace"))
        cv, results, reason = dkim.arc_verify(data, dnsfunc=self.dnsfunc)
        self.assertEqual(cv, dkim.CV_Pass, (reason, results))

    def test_arcd_down_accept(self):
        self.send(self.smtpd_down_accept, self.message("arc-down-accept"))
        data = self.spooled("arc-down-accept")
        self.assertNotIn(b"Authentication-Results:", data)
        self.assertNotIn(b"ARC-Seal:", data)
        log = self.smtpd_down_accept.log()
        self.assertRegex(log, r"Authenticate failed .*accepting without Authentication-Results")

    def test_arcd_hung_timeout(self):
        # arcd takes the connection and never answers: after ArcTimeout= the
        # message is accepted without our header, and meanwhile the server
        # serves other sessions (the wait is an event, not a block).
        result = {}

        def send():
            t0 = time.monotonic()
            self.send(self.smtpd_hung, self.message("arc-hung"))
            result["seconds"] = time.monotonic() - t0

        th = threading.Thread(target=send)
        th.start()
        time.sleep(0.5)
        with smtplib.SMTP("127.0.0.1", self.smtpd_hung.port, timeout=30) as s:
            self.assertEqual(s.noop()[0], 250)
        self.assertTrue(th.is_alive(), "the other session was served only after the wait")
        th.join(30)
        self.assertGreaterEqual(result.get("seconds", 0), 2.5)
        data = self.spooled("arc-hung")
        self.assertNotIn(b"Authentication-Results:", data)
        self.assertRegex(self.smtpd_hung.log(), r"Authenticate failed \(io\.halyard\.Varlink\.TimedOut")

    def test_arcd_down_policy(self):
        self.send(self.smtpd_down_policy, self.message("arc-down-policy"))
        data = self.spooled("arc-down-policy")
        text = data.decode(errors="replace")
        self.assertRegex(text, r"X-Test-Down: arcd: ")
        self.assertIn("X-Test-AR: mx.halyard.test; spf=temperror; dkim=temperror\r\n", text)
        self.assertNotIn("ARC-Seal:", text)
        self.assertRegex(self.smtpd_down_policy.log(), r"Seal for relay\.halyard\.test failed .*goes on without it")

    def test_arcd_down_tempfail(self):
        with smtplib.SMTP("127.0.0.1", self.smtpd_down_tempfail.port, timeout=30) as s:
            s.ehlo("client.sender.halyard.test")
            s.mail("alice@sender.halyard.test")
            s.rcpt("bob@example.org")
            code, resp = s.data(self.message("arc-down-tempfail"))
            self.assertEqual((code, resp[:5]), (451, b"4.7.0"))
            # The session goes on.
            self.assertEqual(s.noop()[0], 250)
        time.sleep(0.3)
        self.assertEqual(spool_with(self.q.spool, "arc-down-tempfail"), [])
        # Counted as what it is, not as the queue being down.
        rejects = {r["reason"]: r["count"] for r in self.smtpd_down_tempfail.status()["rejects"]}
        self.assertEqual(rejects.get("auth-unavailable"), 1, rejects)
        self.assertEqual(rejects["queue-unavailable"], 0, rejects)


if __name__ == "__main__":
    unittest.main(verbosity=2)
