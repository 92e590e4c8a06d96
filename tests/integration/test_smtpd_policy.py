#!/usr/bin/python3
"""halyard-smtpd running an operator's policy (HPL) at every SMTP phase,
with real clients, a real halyard-queued and a real DNSSEC-validating DNS on
loopback (tests/dns/fixture.sh) for dnsbl() and dns_query():

- connect: a client listed in a DNSBL is refused with 554 and the
  connection closed; a listed lookup suspends the session, not the server
- helo, mailfrom, rcptto: Reject()/Defer() with the script's code, enhanced
  code and text; Accept() in rcptto relays a domain the built-in rules
  would refuse, and no decision falls back to them (never an open relay)
- rate(): the n+1-th recipient in the interval is deferred
- eod: header edits (add, set, delete) land in the queued message,
  $context carries state from phase to phase, log() reaches the log
- a script error or a lookup past the deadline answers the tempfail, never
  an accept
- reload: a bad policy is refused with file:line:col and the old one keeps
  serving; a good one is swapped in
"""

import os
import re
import signal
import smtplib
import socket
import time
import unittest

import harness
from harness import VarlinkConn, wait_until
from test_delivery import DnsFixture
from test_queued import Queued
from test_smtpd import MESSAGE, SMTPD, Raw, Smtpd, b64, make_server_cert, spool_with, yescrypt

POLICY = r'''
// The integration test's policy: one rule per behaviour under test.
const $PARTNERS = ["partner.example"];
const $GONE = "gone.map";   // next to this file, loaded with the policy

on connect {
    $bl = cache [ttl => 60, size => 100, namespace => "dnsbl"]
          dnsbl($connection["remoteip"], "bl.halyard.test", [timeout => 5]);
    if ($bl["listed"] ?? false)
        Reject("Client listed at bl.halyard.test", [code => 554, enhanced => [5, 7, 1]]);
    $context["connected"] = "yes";
}

on helo {
    if ($arguments["host"] == "bad.example")
        Reject("Bogus HELO", [code => 550, enhanced => [5, 7, 1]]);
}

on mailfrom {
    $sender = $arguments["address"];
    if ($sender["domain"] == "spammer.example")
        Reject("Sender blocked by policy", [code => 550, enhanced => [5, 7, 1]]);
    if ($sender["localpart"] == "slow") {
        $r = dns_query("nonexistent.halyard.test", [type => "A"]);
        if ($r["error"] ?? none)
            Defer("Sender check failed: " . $r["error"], [code => 451, enhanced => [4, 4, 3]]);
    }
    if ($sender["localpart"] == "broken")
        $x = $arguments["address"]["domain"] + 1;   // a runtime error: tempfail, never accept
    $context["sender"] = $sender["address"];
}

on rcptto {
    $rcpt = $arguments["address"];
    if ($rcpt["localpart"] == "blackhole")
        Reject("No such user", [code => 550, enhanced => [5, 1, 1]]);
    $moved = file_lookup($GONE, lower($rcpt["address"]));
    if ($moved != none)
        Reject("User has moved to $moved", [code => 551, enhanced => [5, 1, 6]]);
    if ($rcpt["localpart"] == "limited" and rate("limited", $connection["remoteip"], 2, 60) == false)
        Defer("Too many recipients, slow down", [code => 452, enhanced => [4, 5, 3]]);
    if ($rcpt["domain"] in $PARTNERS)
        Accept();
}

on eod {
    $mail = $arguments["mail"];
    if ($mail->getHeader("Subject") == "spam")
        Reject("Looks like spam", [code => 550, enhanced => [5, 7, 1]]);
    $mail->delHeader("X-Internal");
    $mail->setHeader("X-Priority", "3");
    $mail->addHeader("X-Policy", "checked " . ($context["connected"] ?? "?") . " " . ($context["sender"] ?? "?"));
    $to = [];
    foreach ($transaction["recipients"] as $rcpt)
        $to[] = $rcpt["localpart"] . " at " . $rcpt["domain"];
    $mail->addHeader("X-Policy-Recipients", str_join($to, ", "));
    log("info", "eod policy saw " . $mail->getHeader("Subject"));
    Accept();
}

on disconnect {
    // After the session: the client is gone, only logs and counters remain.
    if (($connection["helo"]["host"] ?? "") == "bye.example")
        log("info", "disconnect " . $arguments["close"] . " " . ($context["sender"] ?? "-") . " " .
            ($arguments["error"] ?? "-"));
}
'''

BAD_POLICY = "on rcptto {\n    Reject(\"x\");\n    nosuchfunction(1);\n}\n"
RELOADED_POLICY = "on helo {\n    Reject(\"Closed for the test\", [code => 554, enhanced => [5, 7, 1]]);\n}\n"


class PolicyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.dns = DnsFixture(cls.tmp)
        cls.q = Queued(cls.tmp).start()
        cls.policy = cls.tmp / "policy.hal"
        (cls.tmp / "gone.map").write_text("# users who left\nold@example.org new@elsewhere.example\n")
        cls.policy.write_text(POLICY)
        # [Smtpd] last: the helper appends Queue= to the file.
        config = ("[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
                  "[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nTimeout=30s\n"
                  "Policy=%s\nPolicyTimeout=3s\n"
                  % (cls.dns.env["HALYARD_DNS_FORWARDER"], cls.dns.env["HALYARD_DNS_TA"], cls.policy))
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, config, name="policy").start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.dns.stop()
        cls.tmp.cleanup()

    def spool_with(self, marker):
        return spool_with(self.q.spool, marker)

    def connect(self, source="127.0.0.1"):
        s = smtplib.SMTP(timeout=20, source_address=(source, 0))
        s.connect("127.0.0.1", self.smtpd.port)
        return s

    def test_connect_dnsbl(self):
        sock = socket.create_connection(("127.0.0.1", self.smtpd.port), timeout=20, source_address=("127.0.0.2", 0))
        data = b""
        while not data.endswith(b"\r\n"):
            d = sock.recv(4096)
            if not d:
                break
            data += d
        self.assertEqual(data, b"554 5.7.1 mx.halyard.test Client listed at bl.halyard.test\r\n")
        self.assertEqual(sock.recv(4096), b"")  # closed
        sock.close()
        # Not listed: greeted.
        with self.connect() as s:
            self.assertEqual(s.noop()[0], 250)

    def test_cache_list_and_clear(self):
        for _ in range(2):
            with self.connect() as s:
                self.assertEqual(s.noop()[0], 250)
        # halyardctl finds smtpd at RUNTIME_DIR/io.halyard.Smtpd.
        rt = self.tmp / "rt"
        os.makedirs(rt, exist_ok=True)
        if not os.path.exists(rt / "io.halyard.Smtpd"):
            os.symlink(self.smtpd.varlink, rt / "io.halyard.Smtpd")
        rc, out, err = harness.halyardctl("--runtime-dir=%s" % rt, "policy", "cache", "list")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"(?m)^dnsbl +dnsbl +[1-9]")
        with VarlinkConn(str(self.smtpd.varlink)) as c:
            r = c.call("io.halyard.Smtpd.PolicyCacheList", {})
            buckets = {b["namespace"]: b for b in r["parameters"]["buckets"]}
            self.assertIn("dnsbl", buckets, r)
            self.assertGreaterEqual(buckets["dnsbl"]["size"], 1)
            self.assertGreaterEqual(buckets["dnsbl"]["hits"], 1)  # the second connection
        rc, out, err = harness.halyardctl("--runtime-dir=%s" % rt, "policy", "cache", "clear", "dnsbl")
        self.assertEqual((rc, out), (0, "Cleared dnsbl\n"), err)
        with VarlinkConn(str(self.smtpd.varlink)) as c:
            r = c.call("io.halyard.Smtpd.PolicyCacheList", {})
            sizes = [b["size"] for b in r["parameters"]["buckets"] if b["namespace"] == "dnsbl"]
            self.assertEqual(sum(sizes), 0)
        self.assertEqual(self.smtpd.status()["policy"], str(self.policy))

    def test_trace(self):
        rt = self.tmp / "rt-trace"
        os.makedirs(rt, exist_ok=True)
        if not os.path.exists(rt / "io.halyard.Smtpd"):
            os.symlink(self.smtpd.varlink, rt / "io.halyard.Smtpd")
        rc, out, err = harness.halyardctl("--runtime-dir=%s" % rt, "policy", "trace", "127.0.0.1", "on")
        self.assertEqual((rc, out), (0, "Tracing the policy for: 127.0.0.1\n"), err)
        try:
            with self.connect() as s:
                s.ehlo("client.test")
                self.assertEqual(s.mail("slow@client.test")[0], 451)
        finally:
            rc, out, err = harness.halyardctl("--runtime-dir=%s" % rt, "policy", "trace", "127.0.0.1", "off")
            self.assertEqual((rc, out), (0, "Tracing the policy for: nobody\n"), err)
        log = self.smtpd.log()
        self.assertRegex(log, r'policy trace: %s:\d+:\d+: dns_query\("nonexistent\.halyard\.test", \{"type":"A"\}\)'
                         % re.escape(str(self.policy)))
        self.assertRegex(log, r'policy trace: .*: dns_query -> \{"error":"nxdomain"\}')
        self.assertRegex(log, r"policy trace: .*policy\.hal:\d+:\d+: defer 451 4\.4\.3 Sender check failed: nxdomain")

    def test_helo(self):
        with self.connect() as s:
            code, resp = s.ehlo("bad.example")
            self.assertEqual((code, resp), (550, b"5.7.1 Bogus HELO"))
            # The refused HELO does not count as one.
            code, resp = s.docmd("MAIL FROM:<a@client.test>")
            self.assertEqual(code, 503)
            self.assertEqual(s.ehlo("good.example")[0], 250)

    def test_mailfrom_and_rcptto(self):
        with self.connect() as s:
            s.ehlo("client.test")
            code, resp = s.mail("x@spammer.example")
            self.assertEqual((code, resp), (550, b"5.7.1 Sender blocked by policy"))
            self.assertEqual(s.mail("alice@client.test")[0], 250)
            self.assertEqual(s.rcpt("blackhole@example.org"), (550, b"5.1.1 No such user"))
            # Accept() relays the partner domain; without a decision the
            # built-in rule refuses a foreign one.
            self.assertEqual(s.rcpt("bob@partner.example")[0], 250)
            self.assertEqual(s.rcpt("carol@foreign.example"), (554, b"5.7.1 Relay access denied"))
            self.assertEqual(s.rcpt("dave@example.org")[0], 250)

    def test_file_lookup(self):
        with self.connect() as s:
            s.ehlo("client.test")
            s.mail("alice@client.test")
            self.assertEqual(s.rcpt("Old@example.org"), (551, b"5.1.6 User has moved to new@elsewhere.example"))
            self.assertEqual(s.rcpt("bob@example.org")[0], 250)

    def test_rate(self):
        with self.connect() as s:
            s.ehlo("client.test")
            s.mail("alice@client.test")
            self.assertEqual(s.rcpt("limited@example.org")[0], 250)
            self.assertEqual(s.rcpt("limited@example.org")[0], 250)
            self.assertEqual(s.rcpt("limited@example.org"), (452, b"4.5.3 Too many recipients, slow down"))

    def test_eod_header_edits_and_context(self):
        msg = ("From: a@client.test\r\nTo: bob@example.org\r\nSubject: edits\r\nX-Internal: secret\r\n"
               "X-Priority: 1\r\nX-Internal: secret2\r\n\r\nhello eod edits\r\n")
        with self.connect() as s:
            s.ehlo("client.test")
            s.sendmail("alice@client.test", ["bob@example.org"], msg)
            code, resp = s.ehlo("client.test")
            s.mail("alice@client.test")
            s.rcpt("bob@example.org")
            code, resp = s.data("Subject: spam\r\n\r\nbuy now\r\n")
            self.assertEqual((code, resp), (550, b"5.7.1 Looks like spam"))
        msgs = self.spool_with("hello eod edits")
        self.assertEqual(len(msgs), 1)
        head = msgs[0].split(b"\r\n\r\n", 1)[0]
        self.assertTrue(head.startswith(b"Received: from client.test"), head)
        self.assertIn(b"\r\nX-Policy: checked yes alice@client.test\r\n", head)
        self.assertIn(b"\r\nX-Policy-Recipients: bob at example.org\r\n", head)
        self.assertIn(b"\r\nX-Priority: 3\r\n", head)
        self.assertNotIn(b"X-Priority: 1", head)
        self.assertNotIn(b"X-Internal", head)
        self.assertTrue(head.endswith(b"\r\nSubject: edits"), head)
        wait_until(lambda: "policy: eod policy saw edits" in self.smtpd.log(), 5, what="the policy's log line")
        self.assertEqual(self.spool_with("buy now"), [])

    def test_disconnect(self):
        """The disconnect handler runs after QUIT (close local) and after the
        client drops the connection (close remote), with $context from the
        session's earlier phases."""
        with self.connect() as s:
            s.ehlo("bye.example")
            s.mail("carol@client.test")
            s.rset()
        wait_until(lambda: "policy: disconnect local carol@client.test -" in self.smtpd.log(), 5,
                   what="the disconnect handler after QUIT")
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO bye.example\r\nMAIL FROM:<dave@client.test>\r\n")
        c.reply()  # EHLO
        self.assertTrue(c.reply().startswith(b"250"))  # MAIL
        c.close()
        wait_until(lambda: "policy: disconnect remote dave@client.test -" in self.smtpd.log(), 5,
                   what="the disconnect handler after the client left")

    def test_failures_tempfail(self):
        with self.connect() as s:
            s.ehlo("client.test")
            # A lookup that fails comes back as a value the script acts on.
            code, resp = s.mail("slow@client.test")
            self.assertEqual((code, resp), (451, b"4.4.3 Sender check failed: nxdomain"))
            # A script error is a tempfail, not an accept.
            code, resp = s.mail("broken@client.test")
            self.assertEqual(code, 451)
            self.assertTrue(resp.startswith(b"4.3.0 "), resp)
        self.assertRegex(self.smtpd.log(), r"policy failed, answering 451 4\.3\.0: .*policy\.hal:\d+:\d+")

    def test_pipelined_commands_wait_for_the_policy(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO pipe.test\r\nMAIL FROM:<x@spammer.example>\r\nMAIL FROM:<a@client.test>\r\n"
               b"RCPT TO:<blackhole@example.org>\r\nRCPT TO:<b@example.org>\r\nNOOP\r\n")
        self.assertTrue(c.reply().startswith(b"250-mx.halyard.test"))
        self.assertEqual(c.reply(), b"550 5.7.1 Sender blocked by policy")
        self.assertEqual(c.reply(), b"250 2.1.0 Ok")
        self.assertEqual(c.reply(), b"550 5.1.1 No such user")
        self.assertEqual(c.reply(), b"250 2.1.5 Ok")
        self.assertEqual(c.reply(), b"250 2.0.0 Ok")
        c.close()

    def test_zz_reload(self):
        """Runs last: it changes the policy."""
        self.policy.write_text(BAD_POLICY)
        r = subprocess_run_check(self.smtpd)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("%s:3:5: error:" % self.policy, r.stderr)
        self.smtpd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "Policy %s refused" % self.policy in self.smtpd.log(), 5, what="the refusal")
        with self.connect() as s:  # the old policy still serves
            self.assertEqual(s.ehlo("bad.example")[0], 550)
            self.assertEqual(s.ehlo("good.example")[0], 250)
        self.policy.write_text(RELOADED_POLICY)
        self.smtpd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.smtpd.log().count("Policy %s loaded" % self.policy) >= 1, 5, what="the reload")
        with self.connect() as s:
            self.assertEqual(s.ehlo("good.example"), (554, b"5.7.1 Closed for the test"))


AUTH_POLICY = r'''
on auth {
    $user = lower($arguments["username"]);
    if ($user == "blocked")
        Defer("Account locked", [code => 454, enhanced => [4, 7, 0]]);
    if ($user == "bob")
        return;   // no decision: the password file decides
    if (passwd_verify("credential:users", $user, $arguments["password"]))
        Accept([username => $user]);
    Reject("Authentication failed", [code => 535, enhanced => [5, 7, 8]]);
}

on mailfrom {
    if (($connection["auth"]["username"] ?? none) == "alice" and $arguments["address"]["domain"] != "client.test")
        Reject("alice may only send as client.test", [code => 553, enhanced => [5, 7, 1]]);
}
'''


class AuthPolicyTest(unittest.TestCase):
    """The auth phase: the policy verifies the password with passwd_verify()
    (off the loop), names the user, and later phases see it."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        creds = cls.tmp / "creds"
        make_server_cert(creds)
        (creds / "users").write_text("alice:%s\nblocked:%s\nbob:%s\n" % (yescrypt("alice secret"), yescrypt("x"),
                                                                         yescrypt("bob secret")))
        cls.q = Queued(cls.tmp).start()
        policy = cls.tmp / "auth.hal"
        policy.write_text(AUTH_POLICY)
        config = ("[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nAuthPasswordFile=users\n"
                  "Policy=%s\n" % policy)
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, config, name="authpolicy").start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.tmp.cleanup()

    def connect(self):
        import ssl
        s = smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=20)
        s.ehlo("client.test")
        s._host = "mx.halyard.test"
        s.starttls(context=ssl.create_default_context(cafile=str(self.tmp / "creds" / "smtpd-tls.crt")))
        s.ehlo("client.test")
        return s

    def test_policy_decides_auth(self):
        with self.connect() as s:
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0ALICE\0alice secret"))
            self.assertEqual((code, resp[:5]), (235, b"2.7.0"), resp)
            self.assertEqual(s.mail("alice@elsewhere.example"), (553, b"5.7.1 alice may only send as client.test"))
            self.assertEqual(s.mail("alice@client.test")[0], 250)
            self.assertEqual(s.rcpt("friend@foreign.example")[0], 250)  # authenticated: may relay
        self.assertIn("user alice: authenticated", self.smtpd.log())  # the name the policy gave
        with self.connect() as s:  # no decision from the policy: the password file
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0bob\0bob secret"))
            self.assertEqual((code, resp[:5]), (235, b"2.7.0"), resp)
        with self.connect() as s:
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0blocked\0x"))
            self.assertEqual((code, resp[:5]), (454, b"4.7.0"))
            t = time.monotonic()
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0alice\0wrong"))
            self.assertEqual((code, resp[:5]), (535, b"5.7.8"))
            self.assertGreaterEqual(time.monotonic() - t, 0.9)  # delayed like any failure


SHARED_RATE_POLICY = r'''
on rcptto {
    $ok = rate("shared-rcpt", $arguments["address"]["domain"], 3, 60, [shared => true]);
    if ($ok == none)
        Defer("Rate service unavailable", [code => 451, enhanced => [4, 3, 0]]);
    if ($ok == false)
        Defer("Domain limit reached (" . rate("shared-rcpt", $arguments["address"]["domain"], 0, 60, [shared => true]) . ")",
              [code => 452, enhanced => [4, 5, 3]]);
    Accept();
}
'''


class SharedRateTest(unittest.TestCase):
    """rate(..., [shared => true]) through a real redis-server on loopback:
    two smtpd instances count against one limit; with Redis gone the
    policy gets none and decides (here: a tempfail)."""

    @classmethod
    def setUpClass(cls):
        import shutil
        import subprocess
        from smtp_peers import free_port, wait_port
        cls.tmp = harness.TempDir()
        cls.redis_port = free_port()
        cls.redis = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(cls.redis_port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", str(cls.tmp.path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        harness._live_processes.append(cls.redis)
        wait_port(cls.redis_port, 10, cls.redis)
        cls.q = Queued(cls.tmp).start()
        policy = cls.tmp / "rate.hal"
        policy.write_text(SHARED_RATE_POLICY)
        config = ("[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nPolicy=%s\n"
                  "RateRedis=127.0.0.1:%d\n" % (policy, cls.redis_port))
        cls.a = Smtpd(cls.tmp, cls.q.socket, config, name="rate-a").start()
        cls.b = Smtpd(cls.tmp, cls.q.socket, config, name="rate-b").start()

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.b.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        if cls.redis.poll() is None:
            cls.redis.kill()
            cls.redis.wait()
        cls.tmp.cleanup()

    def session(self, smtpd):
        s = smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20)
        s.ehlo("client.test")
        s.mail("a@client.test")
        return s

    def test_a_limit_across_hosts(self):
        with self.session(self.a) as sa, self.session(self.b) as sb:
            self.assertEqual(sa.rcpt("one@limited.example")[0], 250)
            self.assertEqual(sb.rcpt("two@limited.example")[0], 250)
            self.assertEqual(sa.rcpt("three@limited.example")[0], 250)
            self.assertEqual(sb.rcpt("four@limited.example"), (452, b"4.5.3 Domain limit reached (3)"))
            self.assertEqual(sa.rcpt("five@limited.example")[0], 452)
            # Other keys have their own count.
            self.assertEqual(sb.rcpt("x@other.example")[0], 250)

    def test_b_redis_gone(self):
        self.redis.kill()
        self.redis.wait()
        with self.session(self.a) as s:
            self.assertEqual(s.rcpt("x@third.example"), (451, b"4.3.0 Rate service unavailable"))


def subprocess_run_check(smtpd):
    import subprocess
    env = dict(os.environ, HALYARD_CONFIG=str(smtpd.config))
    return subprocess.run([str(SMTPD), "--check"], env=env, capture_output=True, text=True, timeout=20)


if __name__ == "__main__":
    unittest.main()
