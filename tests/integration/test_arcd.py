#!/usr/bin/python3
"""halyard-arcd, the real binary under systemd-socket-activate, against dkimpy
(python3-dkim) as the independent implementation, with the keys, SPF and
DMARC records served by a real DNSSEC-signed DNS on loopback
(tests/dns/fixture.sh); private keys come as credentials
($CREDENTIALS_DIRECTORY):

- Authenticate: a dkimpy-signed message passes, a modified body fails; ARC
  chains sealed by dkimpy (1-3 hops) validate with the right oldest pass;
  the Authentication-Results value; SPF and DMARC when built in;
- Seal: arcd's seal over no chain and over dkimpy chains verifies in
  dkimpy (arc_verify, keys from the same zone data); a chain whose newest
  seal says cv=fail is refused (SealRefused); NoKey;
- Sign: RSA and Ed25519 signatures verify in dkimpy; the default h= over-signs;
- GetStatus: keys, per-method counters, DNS queries and cache hits;
- halyardctl arc validate/authenticate/seal/sign;
- configuration errors name file:line; a missing key credential is named."""

import base64
import os
import pathlib
import re
import signal
import subprocess
import sys
import unittest

import harness
from harness import BUILD_ROOT, VarlinkConn, halyardctl, wait_until

import dkim

ARCD = BUILD_ROOT / "services" / "arcd" / "halyard-arcd"
FIXTURE = harness.SOURCE_ROOT / "tests" / "dns" / "fixture.sh"
ZONE = "arc.halyard.test"
AUTHSERV = "mx.halyard.test"


def openssl(*args, input=None):
    return subprocess.run(["openssl"] + list(args), check=True, capture_output=True, input=input).stdout


def rsa_key(bits=2048):
    """(PKCS#1 PEM, DKIM p= value)"""
    pem = openssl("genrsa", "-traditional", str(bits))
    der = openssl("rsa", "-pubout", "-outform", "DER", input=pem)
    return pem, base64.b64encode(der).decode()


def ed25519_key():
    pem = openssl("genpkey", "-algorithm", "ED25519")
    der = openssl("pkey", "-pubout", "-outform", "DER", input=pem)
    return pem, base64.b64encode(der[-32:]).decode()


def txt_strings(text):
    """A zone-file TXT rdata: character-strings of at most 255 bytes."""
    return " ".join('"%s"' % text[i:i + 200] for i in range(0, len(text), 200))


def message(subject="hello", body="Hello there.\r\n", extra=""):
    return ("From: Alice <alice@%s>\r\nTo: bob@example.org\r\nSubject: %s\r\n"
            "Date: Fri, 27 Nov 2026 12:00:00 +0000\r\nMessage-ID: <%s@%s>\r\n%s\r\n%s"
            % (ZONE, subject, abs(hash(subject)), ZONE, extra, body)).encode()


class DnsFixture:
    def __init__(self, tmp, records):
        self.dir = pathlib.Path(tmp) / "dns"
        f = pathlib.Path(tmp) / "extra-records.txt"
        f.write_text(records)
        env = dict(os.environ, HALYARD_DNS_EXTRA_RECORDS=str(f))
        subprocess.run([str(FIXTURE), "start", str(self.dir)], check=True, timeout=60, env=env,
                       stdout=subprocess.DEVNULL)
        out = subprocess.run([str(FIXTURE), "env", str(self.dir)], check=True, timeout=10,
                             capture_output=True, text=True).stdout
        self.env = {}
        for line in out.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                self.env[k.replace("export ", "").strip()] = v.strip().strip("'\"")

    def stop(self):
        subprocess.run([str(FIXTURE), "stop", str(self.dir)], timeout=30, stdout=subprocess.DEVNULL)


class Arcd:
    def __init__(self, tmp, config, creds, name="arcd"):
        self.tmp = pathlib.Path(tmp)
        self.name = name
        self.socket = self.tmp / ("%s.sock" % name)
        self.config = self.tmp / ("%s.conf" % name)
        self.config.write_text(config)
        self.creds = creds
        self.proc = None

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        argv = [harness.SOCKET_ACTIVATE, "-l", str(self.socket), "--fdname=varlink",
                "-E", "HALYARD_CONFIG=%s" % self.config, "-E", "CREDENTIALS_DIRECTORY=%s" % self.creds,
                str(ARCD)]
        self.stderr = open(self.tmp / ("%s.stderr" % self.name), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=env, start_new_session=True)
        harness._live_processes.append(self.proc)
        wait_until(lambda: self.proc.poll() is not None or harness.connectable(self.socket), 10,
                   what="arcd socket")
        wait_until(lambda: self.proc.poll() is not None or os.readlink("/proc/%d/exe" % self.proc.pid) == str(ARCD),
                   10, what="arcd exec")
        if self.proc.poll() is not None:
            raise AssertionError("arcd exited: %s" % self.log())
        # Serving: signals are handled by the loop from here on.
        self.ok("GetStatus")
        return self

    def stop(self):
        """SIGTERM (a clean exit, so sanitizer builds report leaks), then SIGKILL."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self.stderr.close()

    def log(self):
        return (self.tmp / ("%s.stderr" % self.name)).read_text(errors="replace")

    def call(self, method, params=None, content=None):
        params = dict(params or {})
        fds = None
        if content is not None:
            fd = os.memfd_create("msg")
            os.write(fd, content)
            params["content"] = 0
            fds = [fd]
        try:
            with VarlinkConn(str(self.socket), timeout=30) as c:
                c.send("io.halyard.Arc." + method, params, fds=fds)
                return c.recv(timeout=30)
        finally:
            if fds:
                os.close(fds[0])

    def ok(self, method, params=None, content=None):
        r = self.call(method, params, content)
        if r is None or "error" in r:
            raise AssertionError("%s failed: %r\n%s" % (method, r, self.log()[-3000:]))
        return r["parameters"]


class ArcdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.check_binaries()
        cls.tmp = harness.TempDir(prefix="hyarc-")
        cls.creds = pathlib.Path(cls.tmp / "creds")
        cls.creds.mkdir()
        cls.py_pem, py_pub = rsa_key()           # dkimpy's DKIM and ARC key
        cls.py2_pem, py2_pub = rsa_key()          # a second dkimpy hop's key
        cls.rsa_pem, rsa_pub = rsa_key()          # arcd's RSA key
        cls.ed_pem, ed_pub = ed25519_key()        # arcd's Ed25519 key
        (cls.creds / "rsa.pem").write_bytes(cls.rsa_pem)
        (cls.creds / "ed.pem").write_bytes(cls.ed_pem)
        small_pem, _ = rsa_key(1024)
        (cls.creds / "small.pem").write_bytes(small_pem)
        cls.txt = {
            "py._domainkey.%s" % ZONE: "v=DKIM1; k=rsa; p=" + py_pub,
            "py2._domainkey.%s" % ZONE: "v=DKIM1; k=rsa; p=" + py2_pub,
            "rsa1._domainkey.%s" % ZONE: "v=DKIM1; k=rsa; p=" + rsa_pub,
            "ed1._domainkey.%s" % ZONE: "v=DKIM1; k=ed25519; p=" + ed_pub,
            ZONE: "v=spf1 ip4:192.0.2.10 -all",
            "_dmarc.%s" % ZONE: "v=DMARC1; p=reject",
        }
        records = "".join("%s. 300 IN TXT %s\n" % (name, txt_strings(v)) for name, v in cls.txt.items())
        cls.dns = DnsFixture(cls.tmp.path, records)
        cls.dns_config = ("[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
                          % (cls.dns.env["HALYARD_DNS_FORWARDER"], cls.dns.env["HALYARD_DNS_TA"]))
        config = ("[Arc]\nAuthservId=%s\nKey=%s rsa1 rsa.pem\nKey=%s ed1 ed.pem\n" % (AUTHSERV, ZONE, ZONE)
                  + cls.dns_config)
        cls.arcd = Arcd(cls.tmp.path, config, cls.creds).start()

    @classmethod
    def tearDownClass(cls):
        cls.arcd.stop()
        cls.dns.stop()
        log = cls.arcd.log()
        cls.tmp.cleanup()
        if "Sanitizer" in log or "runtime error" in log:
            raise AssertionError("arcd: sanitizer report:\n" + log[-5000:])
        if cls.arcd.proc.returncode != 0:
            raise AssertionError("arcd exited with %s:\n%s" % (cls.arcd.proc.returncode, log[-3000:]))

    # ---- dkimpy helpers ----

    def dnsfunc(self, name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        v = self.txt.get(n.rstrip("."))
        return v.encode() if v else None

    def py_sign(self, msg, selector=b"py"):
        sig = dkim.sign(msg, selector, ZONE.encode(), self.py_pem,
                        canonicalize=(b"relaxed", b"relaxed"),
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
        return sig + msg

    def py_arc_hop(self, msg, hop, arc_result="none", selector=b"py", key=None):
        srv = ("hop%d.%s" % (hop, ZONE)).encode()
        ar = b"Authentication-Results: " + srv + b"; arc=" + arc_result.encode() + b"\r\n"
        msg = ar + msg
        sets = dkim.arc_sign(msg, selector, ZONE.encode(), key or self.py_pem, srv)
        return b"".join(sets) + msg

    def py_chain(self, hops):
        msg = self.py_sign(message("chain %d" % hops))
        for i in range(1, hops + 1):
            msg = self.py_arc_hop(msg, i, "none" if i == 1 else "pass", b"py" if i % 2 else b"py2",
                                  self.py_pem if i % 2 else self.py2_pem)
        return msg

    def py_arc_verify(self, msg):
        cv, results, comment = dkim.arc_verify(msg, dnsfunc=self.dnsfunc)
        return cv, comment

    def seal(self, msg, **params):
        r = self.arcd.ok("Seal", params, msg)
        return r, "".join(r["headers"]).encode() + msg

    # ---- Authenticate ----

    def test_dkim_pass(self):
        msg = self.py_sign(message("dkim pass"))
        r = self.arcd.ok("Authenticate", {"clientIp": "192.0.2.10", "mailFrom": "alice@" + ZONE,
                                          "helo": "mail." + ZONE}, msg)
        self.assertEqual(len(r["dkim"]), 1, r)
        d = r["dkim"][0]
        self.assertEqual(d["result"], "pass", r)
        self.assertEqual(d["domain"], ZONE)
        self.assertEqual(d["selector"], "py")
        self.assertEqual(d["algorithm"], "rsa-sha256")
        self.assertEqual(d["keyBits"], 2048)
        self.assertEqual(len(d["signaturePrefix"]), 8)
        self.assertEqual(r["arc"]["status"], "none")
        h = r["header"]
        self.assertTrue(h.startswith(AUTHSERV + ";"), h)
        self.assertRegex(h, r"dkim=pass .*header\.d=%s" % re.escape(ZONE))
        self.assertIn("arc=none", h)
        # No chain: the client address stays out of the field.
        self.assertNotIn("smtp.remote-ip", h)
        if "spf" in r:
            self.assertEqual(r["spf"]["result"], "pass", r)
            self.assertIn("spf=pass smtp.mailfrom=alice@" + ZONE, h)
        if "dmarc" in r:
            self.assertEqual(r["dmarc"]["result"], "pass", r)
            self.assertEqual(r["dmarc"]["policy"], "reject", r)
            self.assertIn("dmarc=pass", h)

    def test_spf_only_empty_content(self):
        """What smtpd does at MAIL FROM: SPF alone, with an empty message."""
        r = self.arcd.ok("Authenticate", {"checks": ["spf"], "clientIp": "192.0.2.10", "mailFrom": "alice@" + ZONE,
                                          "helo": "mail." + ZONE, "authservId": "other.example"}, b"")
        self.assertEqual(r["dkim"], [])
        self.assertNotIn("arc", r)
        self.assertTrue(r["header"].startswith("other.example;"), r)
        if "spf" not in r:
            self.skipTest("arcd built without SPF/DMARC")
        self.assertEqual(r["spf"]["result"], "pass", r)
        self.assertNotIn("dmarc", r)
        r = self.arcd.ok("Authenticate", {"checks": ["spf"], "clientIp": "192.0.2.10", "mailFrom": "",
                                          "helo": ZONE}, b"")
        self.assertEqual((r["spf"]["identity"], r["spf"]["result"]), ("helo", "pass"), r)

    def test_dkim_body_modified(self):
        msg = self.py_sign(message("dkim fail")) + b"appended\r\n"
        r = self.arcd.ok("Authenticate", {"checks": ["dkim"]}, msg)
        self.assertEqual(r["dkim"][0]["result"], "fail", r)
        self.assertIn("dkim=fail", r["header"])
        self.assertNotIn("arc", r)
        self.assertIsNone(r.get("spf"))

    def test_spf_dmarc_fail(self):
        msg = message("spoofed")
        r = self.arcd.ok("Authenticate", {"clientIp": "198.51.100.7", "mailFrom": "alice@" + ZONE}, msg)
        if "spf" not in r:
            self.skipTest("arcd built without SPF/DMARC")
        self.assertEqual(r["spf"]["result"], "fail", r)
        self.assertEqual(r["dmarc"]["result"], "fail", r)
        self.assertEqual(r["dmarc"]["disposition"], "reject", r)

    def test_arc_dkimpy_chains(self):
        for hops in (1, 2, 3):
            msg = self.py_chain(hops)
            self.assertEqual(self.py_arc_verify(msg)[0], dkim.CV_Pass)
            r = self.arcd.ok("Authenticate", {"checks": ["arc"], "clientIp": "192.0.2.10"}, msg)
            a = r["arc"]
            self.assertEqual(a["status"], "pass", (hops, r))
            self.assertEqual(a["sets"], hops)
            self.assertEqual(a["oldestPass"], 1)
            self.assertEqual([s["instance"] for s in a["perSet"]], list(range(1, hops + 1)))
            self.assertTrue(all(s["asResult"] == "pass" for s in a["perSet"]), a)
            self.assertIn("arc=pass header.oldest-pass=1 smtp.remote-ip=192.0.2.10", r["header"])
        # Changing the body after the last hop breaks the newest AMS.
        r = self.arcd.ok("Authenticate", {"checks": ["arc"]}, self.py_chain(2) + b"tampered\r\n")
        self.assertEqual(r["arc"]["status"], "fail", r)
        self.assertIn("arc=fail", r["header"])

    # ---- Seal ----

    def test_seal_verified_by_dkimpy(self):
        for hops in (0, 1, 2):
            msg = self.py_chain(hops) if hops else self.py_sign(message("seal fresh"))
            r, sealed = self.seal(msg, clientIp="192.0.2.10", mailFrom="alice@" + ZONE)
            self.assertEqual(r["instance"], hops + 1)
            self.assertEqual(r["cv"], "none" if hops == 0 else "pass")
            self.assertEqual(len(r["headers"]), 3)
            self.assertTrue(r["headers"][0].startswith("ARC-Seal: i=%d;" % (hops + 1)), r)
            self.assertTrue(r["headers"][1].startswith("ARC-Message-Signature: i=%d;" % (hops + 1)), r)
            self.assertTrue(r["headers"][2].startswith("ARC-Authentication-Results: i=%d; %s;"
                                                       % (hops + 1, AUTHSERV)), r)
            self.assertIn("dkim=pass", r["headers"][2])
            cv, comment = self.py_arc_verify(sealed)
            self.assertEqual(cv, dkim.CV_Pass, (hops, comment, sealed[:3000]))
            # arcd agrees with itself, and a dkimpy hop on top still verifies.
            a = self.arcd.ok("Authenticate", {"checks": ["arc"]}, sealed)["arc"]
            self.assertEqual((a["status"], a["sets"]), ("pass", hops + 1))
            more = self.py_arc_hop(sealed, hops + 2, "pass")
            self.assertEqual(self.py_arc_verify(more)[0], dkim.CV_Pass)

    def test_seal_auth_results(self):
        msg = message("seal with ar")
        r, sealed = self.seal(msg, authResults="spf=pass smtp.mailfrom=alice@" + ZONE)
        self.assertEqual(r["headers"][2].replace("\r\n\t", " "),
                         "ARC-Authentication-Results: i=1; %s; spf=pass smtp.mailfrom=alice@%s\r\n" % (AUTHSERV, ZONE))
        r, _ = self.seal(msg, authResults="%s; dkim=none" % AUTHSERV)
        self.assertIn("i=1; %s; dkim=none" % AUTHSERV, r["headers"][2])
        # Folded is fine; a line break that would start a new field is not.
        r, _ = self.seal(msg, authResults="%s;\r\n\tspf=pass\r\n  smtp.mailfrom=a@%s" % (AUTHSERV, ZONE))
        self.assertIn("i=1; %s; spf=pass smtp.mailfrom=a@%s" % (AUTHSERV, ZONE),
                      r["headers"][2].replace("\r\n\t", " "))
        r = self.arcd.call("Seal", {"authResults": "spf=pass\r\nX-Injected: yes"}, msg)
        self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)
        self.assertEqual(self.py_arc_verify(sealed)[0], dkim.CV_Pass)

    def test_seal_refused_after_cv_fail(self):
        msg = self.py_chain(1)
        broken = self.py_arc_hop(msg + b"tampered\r\n", 2, "fail")
        self.assertIn(b"cv=fail", broken)
        r = self.arcd.call("Seal", {}, broken)
        self.assertEqual(r.get("error"), "io.halyard.Arc.SealRefused", r)
        self.assertIn("cv=fail", r["parameters"]["reason"])

    def test_seal_failing_chain_gets_cv_fail(self):
        msg = self.py_chain(2) + b"tampered\r\n"
        r, sealed = self.seal(msg)
        self.assertEqual((r["instance"], r["cv"]), (3, "fail"))
        self.assertIn("arc=fail", r["headers"][2])

    def test_seal_refused_beyond_50(self):
        msg = self.py_sign(message("fifty"))
        for i in range(1, 51):
            msg = self.py_arc_hop(msg, i, "none" if i == 1 else "pass")
        a = self.arcd.ok("Authenticate", {"checks": ["arc"]}, msg)["arc"]
        self.assertEqual((a["status"], a["sets"]), ("pass", 50), a)
        r = self.arcd.call("Seal", {}, msg)
        self.assertEqual(r.get("error"), "io.halyard.Arc.SealRefused", r)
        self.assertIn("50", r["parameters"]["reason"])

    def test_concurrent_seals(self):
        """Many calls at once: the worker threads sign, every reply is right."""
        import concurrent.futures
        msgs = [self.py_sign(message("parallel %d" % i)) for i in range(16)]
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            results = list(ex.map(lambda m: self.seal(m, authResults="arc=none"), msgs))
        for r, sealed in results:
            self.assertEqual(self.py_arc_verify(sealed)[0], dkim.CV_Pass)
        self.assertEqual(self.arcd.ok("GetStatus")["inFlight"], 0)

    def test_no_key(self):
        r = self.arcd.call("Seal", {"domain": "nokey.example"}, message("nokey"))
        self.assertEqual(r.get("error"), "io.halyard.Arc.NoKey", r)
        r = self.arcd.call("Sign", {"domain": ZONE, "selector": "nope"}, message("nokey"))
        self.assertEqual(r.get("error"), "io.halyard.Arc.NoKey", r)
        self.assertEqual(r["parameters"]["selector"], "nope")

    # ---- Sign ----

    def test_sign_rsa_dkimpy_verifies(self):
        msg = message("sign rsa")
        r = self.arcd.ok("Sign", {"domain": ZONE}, msg)
        h = r["header"]
        self.assertTrue(h.startswith("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"), h)
        self.assertTrue(h.endswith("\r\n"))
        unfolded = h.replace("\r\n\t", " ")
        hl = re.search(r"h=([^;]+);", unfolded).group(1).replace(" ", "").split(":")
        for name in ("from", "subject", "date", "to", "message-id"):
            self.assertEqual(hl.count(name), 2, hl)   # present once, signed twice
        for name in ("cc", "reply-to"):
            self.assertEqual(hl.count(name), 1, hl)   # absent, signed as absent
        self.assertTrue(dkim.verify(h.encode() + msg, dnsfunc=self.dnsfunc))
        self.assertFalse(dkim.verify(h.encode() + msg + b"x\r\n", dnsfunc=self.dnsfunc))
        # ... and arcd's own verifier agrees.
        a = self.arcd.ok("Authenticate", {"checks": ["dkim"]}, h.encode() + msg)
        self.assertEqual(a["dkim"][0]["result"], "pass", a)
        # A header added later breaks it (over-signing).
        self.assertFalse(dkim.verify(h.encode() + b"Subject: injected\r\n" + msg, dnsfunc=self.dnsfunc))

    def test_sign_ed25519(self):
        msg = message("sign ed25519")
        r = self.arcd.ok("Sign", {"domain": ZONE, "selector": "ed1"}, msg)
        h = r["header"]
        self.assertIn("a=ed25519-sha256", h)
        self.assertTrue(dkim.verify(h.encode() + msg, dnsfunc=self.dnsfunc))
        a = self.arcd.ok("Authenticate", {"checks": ["dkim"]}, h.encode() + msg)
        self.assertEqual(a["dkim"][0]["result"], "pass", a)
        self.assertEqual(a["dkim"][0]["algorithm"], "ed25519-sha256", a)

    def test_sign_headers_override(self):
        msg = message("sign headers")
        h = self.arcd.ok("Sign", {"domain": ZONE, "headers": ["From", "Subject"]}, msg)["header"]
        self.assertRegex(h.replace("\r\n\t", " "), r"h=from: ?subject;")
        self.assertTrue(dkim.verify(h.encode() + msg, dnsfunc=self.dnsfunc))

    def test_sign_canonicalization(self):
        # Body whitespace that only relaxed body canonicalization forgives.
        msg = message("sign canon", body="spaced  out \r\n")
        for canon, want in (("simple/simple", "simple/simple"), ("relaxed/simple", "relaxed/simple"),
                            ("simple", "simple/simple"), ("relaxed", "relaxed/simple"),
                            ("simple/relaxed", "simple/relaxed")):
            with self.subTest(canon=canon):
                h = self.arcd.ok("Sign", {"domain": ZONE, "canonicalization": canon}, msg)["header"]
                self.assertIn("c=%s;" % want, h)
                self.assertTrue(dkim.verify(h.encode() + msg, dnsfunc=self.dnsfunc))
                a = self.arcd.ok("Authenticate", {"checks": ["dkim"]}, h.encode() + msg)
                self.assertEqual(a["dkim"][0]["result"], "pass", a)
                # A simple body breaks when the whitespace changes; relaxed does not.
                changed = msg.replace(b"spaced  out \r\n", b"spaced out\r\n")
                self.assertEqual(dkim.verify(h.encode() + changed, dnsfunc=self.dnsfunc), want.endswith("relaxed"))
        for bad in ("loose", "relaxed/", "/simple", "relaxed/simple/simple", "RELAXED"):
            r = self.arcd.call("Sign", {"domain": ZONE, "canonicalization": bad}, msg)
            self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", (bad, r))
            self.assertEqual(r["parameters"]["parameter"], "canonicalization")

    def test_sign_algorithm_picks_the_key(self):
        msg = message("sign algorithm")
        h = self.arcd.ok("Sign", {"domain": ZONE, "algorithm": "ed25519-sha256"}, msg)["header"]
        self.assertIn("a=ed25519-sha256;", h)
        self.assertIn("s=ed1;", h)
        self.assertTrue(dkim.verify(h.encode() + msg, dnsfunc=self.dnsfunc))
        h = self.arcd.ok("Sign", {"domain": ZONE, "algorithm": "rsa-sha256"}, msg)["header"]
        self.assertIn("s=rsa1;", h)
        # The selector's key is of the other kind: no such key.
        r = self.arcd.call("Sign", {"domain": ZONE, "selector": "rsa1", "algorithm": "ed25519-sha256"}, msg)
        self.assertEqual(r.get("error"), "io.halyard.Arc.NoKey", r)
        r = self.arcd.call("Sign", {"domain": ZONE, "algorithm": "rsa-sha1"}, msg)
        self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)
        self.assertEqual(r["parameters"]["parameter"], "algorithm")

    def test_bad_message(self):
        r = self.arcd.call("Sign", {"domain": ZONE}, b"Subject: no from\r\n\r\nbody\r\n")
        self.assertEqual(r.get("error"), "io.halyard.Arc.BadMessage", r)
        r = self.arcd.call("Sign", {"domain": ZONE})
        self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)

    def test_pipe_input(self):
        """A pipe is read through the event loop, not with blocking reads."""
        msg = self.py_sign(message("pipe"))
        rfd, wfd = os.pipe()
        try:
            with VarlinkConn(str(self.arcd.socket), timeout=30) as c:
                c.send("io.halyard.Arc.Authenticate", {"content": 0, "checks": ["dkim"]}, fds=[rfd])
                os.close(rfd)
                rfd = None
                # Meanwhile the service answers others.
                self.assertEqual(self.arcd.ok("GetStatus")["version"], harness.project_version())
                os.write(wfd, msg)
                os.close(wfd)
                wfd = None
                r = c.recv(timeout=30)
            self.assertEqual(r["parameters"]["dkim"][0]["result"], "pass", r)
        finally:
            for fd in (rfd, wfd):
                if fd is not None:
                    os.close(fd)

    def test_large_message(self):
        """10 MB read in slices (file) and through the loop (pipe), hashes right."""
        import threading
        body = ("%s\r\n" % ("z" * 98)) * 100000
        msg = message("large", body=body)
        h = self.arcd.ok("Sign", {"domain": ZONE}, msg)["header"].encode()
        self.assertTrue(dkim.verify(h + msg, dnsfunc=self.dnsfunc))
        rfd, wfd = os.pipe()
        writer = threading.Thread(target=lambda: (os.write(wfd, h + msg), os.close(wfd)))
        with VarlinkConn(str(self.arcd.socket), timeout=60) as c:
            c.send("io.halyard.Arc.Authenticate", {"content": 0, "checks": ["dkim"]}, fds=[rfd])
            os.close(rfd)
            writer.start()
            r = c.recv(timeout=60)
        writer.join()
        self.assertEqual(r["parameters"]["dkim"][0]["result"], "pass", r)

    # ---- GetStatus ----

    def test_status_counters_and_cache(self):
        before = self.arcd.ok("GetStatus")
        msg = self.py_sign(message("cache"))
        for _ in range(3):
            self.arcd.ok("Authenticate", {"checks": ["dkim"]}, msg)
        self.arcd.call("Seal", {"domain": "nokey.example"}, msg)
        after = self.arcd.ok("GetStatus")
        keys = {(k["domain"], k["selector"]): k for k in after["keys"]}
        self.assertEqual(keys[(ZONE, "rsa1")]["algorithm"], "rsa-sha256")
        self.assertEqual(keys[(ZONE, "rsa1")]["bits"], 2048)
        self.assertTrue(keys[(ZONE, "rsa1")]["seal"])
        self.assertEqual(keys[(ZONE, "ed1")]["algorithm"], "ed25519-sha256")
        self.assertFalse(keys[(ZONE, "ed1")]["seal"])
        m0 = {m["method"]: m for m in before["methods"]}
        m1 = {m["method"]: m for m in after["methods"]}
        self.assertEqual(m1["Authenticate"]["calls"] - m0["Authenticate"]["calls"], 3)
        self.assertEqual(m1["Seal"]["calls"] - m0["Seal"]["calls"], 1)
        self.assertEqual(m1["Seal"]["failures"] - m0["Seal"]["failures"], 1)
        # The key was fetched at most once; the other lookups were cache hits.
        self.assertGreaterEqual(after["dnsCacheHits"] - before["dnsCacheHits"], 2, (before, after))
        self.assertLessEqual(after["dnsQueries"] - before["dnsQueries"], 1, (before, after))
        self.assertEqual(after["inFlight"], 0)

    # ---- halyardctl ----

    def ctl_socket_dir(self):
        d = pathlib.Path(self.tmp / "run")
        d.mkdir(exist_ok=True)
        link = d / "io.halyard.Arc"
        if not link.exists():
            link.symlink_to(self.arcd.socket)
        return d

    def test_halyardctl(self):
        run = self.ctl_socket_dir()
        f = pathlib.Path(self.tmp / "chain.eml")
        f.write_bytes(self.py_chain(2))
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "validate", f)
        self.assertEqual(rc, 0, err)
        self.assertIn("ARC:     pass, 2 sets, oldest pass i=1", out)
        self.assertRegex(out, r"i=2 +AMS pass +AS pass")
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "authenticate", f, "--ip", "192.0.2.10",
                                  "--helo", "mail." + ZONE, "--from", "alice@" + ZONE)
        self.assertEqual(rc, 0, err)
        self.assertIn("DKIM:    pass d=%s s=py a=rsa-sha256" % ZONE, out)
        self.assertIn("Authentication-Results: %s;" % AUTHSERV, out)
        rc, out, err = halyardctl("--runtime-dir", run, "--json=short", "arc", "authenticate", f)
        self.assertEqual(rc, 0, err)
        self.assertIn('"header":', out)
        # seal prints the whole sealed message; dkimpy verifies it.
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "seal", f, "--auth-results", "arc=pass")
        self.assertEqual(rc, 0, err)
        sealed = out.encode()
        self.assertTrue(sealed.startswith(b"ARC-Seal: i=3;"), out[:200])
        self.assertTrue(sealed.endswith(f.read_bytes()))
        self.assertEqual(self.py_arc_verify(sealed)[0], dkim.CV_Pass)
        # sign from standard input.
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "sign", "-", "--domain", ZONE, input=message("ctl"))
        self.assertEqual(rc, 0, err)
        self.assertTrue(dkim.verify(out.encode(), dnsfunc=self.dnsfunc))
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "sign", "-", "--domain", ZONE,
                                  "--canonicalization=simple", "--algorithm=ed25519-sha256", input=message("ctl"))
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple;")
        self.assertTrue(dkim.verify(out.encode(), dnsfunc=self.dnsfunc))
        # A broken chain: exit status 1.
        f.write_bytes(self.py_chain(2) + b"tampered\r\n")
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "validate", f)
        self.assertEqual(rc, 1, out)
        self.assertIn("ARC:     fail", out)
        rc, out, err = halyardctl("--runtime-dir", run, "arc", "seal", f, "--domain", "nokey.example")
        self.assertEqual(rc, 1)
        self.assertIn("No key configured for nokey.example", err)
        # halyardctl status lists arcd with its summary.
        rc, out, err = halyardctl("--runtime-dir", run, "status")
        self.assertRegex(out, r"arcd.*running.*2 keys")

    # ---- configuration ----

    def test_reload(self):
        old = self.arcd.config.read_text()
        try:
            # Several keys: one Key= line each, or several on one line.
            three = old.replace("Key=%s rsa1 rsa.pem\n" % ZONE, "Key=%s rsa1 rsa.pem, other.example s1 rsa.pem\n" % ZONE)
            self.arcd.config.write_text(three)
            self.arcd.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: len(self.arcd.ok("GetStatus")["keys"]) == 3, 10, what="reloaded keys")
            r = self.arcd.ok("Sign", {"domain": "other.example"}, message("reload"))
            self.assertIn("d=other.example", r["header"])
            # MaxMessageSize= caps what is read, from a file and from a pipe.
            self.arcd.config.write_text(three + "[Arc]\nMaxMessageSize=4K\n")
            self.arcd.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "reload" in self.arcd.log().lower() and
                       self.arcd.call("Authenticate", {"checks": ["dkim"]}, b"x" * 5000).get("error"), 10,
                       what="reloaded size")
            big = message("big", body="x" * 70 + "\r\n") * 1 + b"y" * 8000 + b"\r\n"
            r = self.arcd.call("Authenticate", {"checks": ["dkim"]}, big)
            self.assertEqual(r.get("error"), "io.halyard.Arc.BadMessage", r)
            self.assertIn("MaxMessageSize=4096", r["parameters"]["reason"])
            rfd, wfd = os.pipe()
            with VarlinkConn(str(self.arcd.socket), timeout=30) as c:
                c.send("io.halyard.Arc.Authenticate", {"content": 0, "checks": ["dkim"]}, fds=[rfd])
                os.close(rfd)
                try:
                    os.write(wfd, big)
                except BrokenPipeError:
                    pass
                r = c.recv(timeout=30)
            os.close(wfd)
            self.assertEqual(r.get("error"), "io.halyard.Arc.BadMessage", r)
            self.assertEqual(self.arcd.ok("Authenticate", {"checks": ["dkim"]}, message("small"))["dkim"], [])
            # A bad configuration is refused; the keys stay.
            self.arcd.config.write_text(old + "[Arc]\nMinRsaBits=12\n")
            self.arcd.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "invalid MinRsaBits=12" in self.arcd.log(), 10, what="refused reload")
            self.assertEqual(len(self.arcd.ok("GetStatus")["keys"]), 3)
        finally:
            self.arcd.config.write_text(old)
            self.arcd.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: len(self.arcd.ok("GetStatus")["keys"]) == 2, 10, what="restored keys")

    def check_config(self, text, creds=None):
        conf = pathlib.Path(self.tmp / "check.conf")
        conf.write_text(text)
        env = dict(os.environ, HALYARD_CONFIG=str(conf))
        env.pop("CREDENTIALS_DIRECTORY", None)
        if creds:
            env["CREDENTIALS_DIRECTORY"] = str(creds)
        p = subprocess.run([str(ARCD), "--check"], env=env, capture_output=True, text=True, timeout=30)
        return p.returncode, p.stderr, str(conf)

    def test_bad_config(self):
        rc, err, path = self.check_config("[Arc]\nAuthservId=x\n\nKey=%s rsa1\n" % ZONE, self.creds)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s:4: error: Key= takes DOMAIN SELECTOR CREDENTIAL triples" % path, err)
        rc, err, path = self.check_config("[Arc]\nMinRsaBits=lots\n", self.creds)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s:2: error:" % path, err)
        rc, err, path = self.check_config("[Arc]\nKey=%s small small.pem\n" % ZONE, self.creds)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s:2: error: key %s/small: RSA key of 1024 bits" % (path, ZONE), err)
        rc, err, path = self.check_config("[Arc]\nKey=%s rsa1 rsa.pem\nSealDomain=other.example\n" % ZONE,
                                          self.creds)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s:3: error: no Key= for SealDomain=other.example" % path, err)
        rc, err, path = self.check_config("[Arc]\nKey=%s rsa1 rsa.pem\n" % ZONE, self.creds)
        self.assertEqual(rc, 0, err)

    def test_missing_credential(self):
        rc, err, path = self.check_config("[Arc]\nKey=%s rsa1 missing.pem\n" % ZONE, self.creds)
        self.assertNotEqual(rc, 0)
        self.assertIn('%s:2: error: key %s/rsa1: credential "missing.pem" not found in $CREDENTIALS_DIRECTORY'
                      % (path, ZONE), err)
        rc, err, path = self.check_config("[Arc]\nKey=%s rsa1 rsa.pem\n" % ZONE)
        self.assertNotEqual(rc, 0)
        self.assertIn("no $CREDENTIALS_DIRECTORY", err)
        # The service itself refuses to start the same way.
        bad = Arcd(self.tmp.path, "[Arc]\nKey=%s rsa1 missing.pem\n" % ZONE + self.dns_config, self.creds, name="bad")
        try:
            bad.start()
        except AssertionError:
            pass
        wait_until(lambda: bad.proc.poll() is not None, 10, what="arcd refusing to start")
        bad.stop()
        self.assertNotEqual(bad.proc.returncode, 0)
        self.assertIn('credential "missing.pem" not found', bad.log())
        self.assertIn("Refusing to start with a bad configuration", bad.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
