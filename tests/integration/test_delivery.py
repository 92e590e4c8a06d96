#!/usr/bin/python3
"""halyard-queued delivering: the real binary under systemd-socket-activate,
a real DNSSEC-signed DNS on loopback (tests/dns/fixture.sh: nsd + unbound)
for MX lookups, and real receiving servers (aiosmtpd SMTP and LMTP) on
127.0.0.1. Covers MX delivery and fallback, per-recipient results,
retries, null MX, expiry, DSN content, LMTP routes, and kill -9 under load
with every acknowledged message arriving."""

import email
import email.policy
import random
import subprocess
import threading
import time
import unittest

import harness
from harness import SOURCE_ROOT, halyardctl, wait_until
from smtp_peers import PostfixInstance, free_port
from test_queued import Queued, enqueue as enqueue_as, kill9_rounds


def enqueue(conn, data, sender="alice@deliver.halyard.test", **kw):
    return enqueue_as(conn, data, sender=sender, **kw)

FIXTURE = SOURCE_ROOT / "tests" / "dns" / "fixture.sh"


class Sink:
    """aiosmtpd (SMTP or LMTP) that records messages; a recipient whose
    local part starts with "temp" gets 451 while `tempfail` is set, "perm"
    gets 550."""

    def __init__(self, lmtp=False, smtputf8=True, host="127.0.0.1", port=None):
        from aiosmtpd.controller import Controller
        from aiosmtpd.lmtp import LMTP
        from aiosmtpd.smtp import SMTP

        self.port = port or free_port()
        self.messages = []
        self.tempfail = True
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                local = address.split("@")[0]
                if local.startswith("perm"):
                    return "550 5.1.1 <%s>: no such user" % address
                if local.startswith("temp") and outer.tempfail:
                    return "451 4.3.0 <%s>: try again later" % address
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 Ok"

            async def handle_DATA(self, server, session, envelope):
                with outer.lock:
                    outer.messages.append({"from": envelope.mail_from, "rcpts": list(envelope.rcpt_tos),
                                           "content": envelope.original_content, "peer": session.peer,
                                           "helo": session.host_name})
                if lmtp:
                    return "\r\n".join("250 2.0.0 <%s> delivered" % r for r in envelope.rcpt_tos)
                return "250 2.0.0 Ok: queued"

        class Ctl(Controller):
            def factory(self):
                return (LMTP if lmtp else SMTP)(self.handler, decode_data=False, enable_SMTPUTF8=smtputf8,
                                                ident="halyard-test-sink")

        self.controller = Ctl(Handler(), hostname=host, port=self.port)
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def find(self, needle):
        with self.lock:
            return [m for m in self.messages if needle in m["content"]]

    def dsns(self):
        with self.lock:
            return [email.message_from_bytes(m["content"], policy=email.policy.default)
                    for m in self.messages if m["from"] in ("", "<>")]


class DnsFixture:
    def __init__(self, tmp):
        self.dir = tmp / "dns"
        subprocess.run([str(FIXTURE), "start", str(self.dir)], check=True, timeout=60,
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


def message(tag, sender="alice@deliver.halyard.test"):
    return ("From: %s\r\nTo: bob@deliver.halyard.test\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n\r\n"
            "body of %s\r\n" % (sender, tag, tag, tag)).encode()


class DeliveryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.dns = DnsFixture(cls.tmp)
        cls.sink = Sink()
        cls.lmtp = Sink(lmtp=True)

    @classmethod
    def tearDownClass(cls):
        cls.sink.stop()
        cls.lmtp.stop()
        cls.dns.stop()
        cls.tmp.cleanup()

    def config(self, extra=""):
        e = self.dns.env
        return ("[Queue]\nHostName=queued.halyard.test\nSmtpPort=%d\nRetrySchedule=1s\nSmtpTimeout=10s\n"
                "TLS=may\nRoutes=lmtp.test=lmtp:[127.0.0.1]:%d\n%s\n"
                "[DNS]\nForwarders=%s\nTrustAnchor=%s\nTransparentZones=halyard.test\nTimeout=5s\n"
                % (self.sink.port, self.lmtp.port, extra, e["HALYARD_DNS_FORWARDER"], e["HALYARD_DNS_TA"]))

    def start_queued(self, extra=""):
        d = harness.TempDir()
        self.addCleanup(d.cleanup)
        q = Queued(d, config=self.config(extra)).start()
        self.addCleanup(lambda: q.proc.poll() is None and q.kill())
        return q

    def wait_for(self, q, predicate, timeout, what):
        try:
            wait_until(predicate, timeout, what=what)
        except AssertionError as e:
            raise AssertionError("%s\nqueued's log:\n%s" % (e, q.log()[-4000:])) from None

    def wait_empty(self, q, timeout=20):
        def empty():
            with q.conn() as c:
                st = c.call("io.halyard.Queue.GetStatus")["parameters"]
                return st["active"] + st["deferred"] + st["held"] == 0
        self.wait_for(q, empty, timeout, "an empty queue")

    def test_mx_delivery_and_fallback(self):
        q = self.start_queued()
        with q.conn() as c:
            qid = enqueue(c, message("mx-1"), rcpts=("bob@deliver.halyard.test",))["parameters"]["queueId"]
            qid2 = enqueue(c, message("mx-2"), rcpts=("carol@deliver2.halyard.test",))["parameters"]["queueId"]
        self.wait_for(q, lambda: self.sink.find(b"Subject: mx-1") and self.sink.find(b"Subject: mx-2"), 20,
                      "both messages at the sink")
        m = self.sink.find(b"Subject: mx-1")[0]
        self.assertEqual(m["rcpts"], ["bob@deliver.halyard.test"])
        self.assertEqual(m["from"], "alice@deliver.halyard.test")
        self.wait_empty(q)
        log = q.log()
        self.assertRegex(log, qid + r": to=<bob@deliver.halyard.test>, relay=mx.deliver.halyard.test\[127.0.0.1\]:\d+")
        # deliver2's first MX (127.0.0.2) refuses: the second one took it.
        self.assertRegex(log, qid2 + r": to=<carol@deliver2.halyard.test>, relay=live.deliver2.halyard.test\[127.0.0.1\]")

    def test_mixed_results_retry_and_dsn(self):
        self.sink.tempfail = True
        q = self.start_queued()
        mon = q.conn()
        mon.send("io.halyard.Queue.Monitor", {}, more=True)
        with q.conn() as c:
            qid = enqueue(c, message("mixed"), rcpts=("ok@deliver.halyard.test", "temp@deliver.halyard.test",
                                                      "perm@deliver.halyard.test"),
                          envid="ENV-MIXED")["parameters"]["queueId"]
        self.wait_for(q, lambda: self.sink.find(b"Subject: mixed"), 20, "the accepted recipient's copy")
        # The permanent failure comes back as a DSN to the sender.
        self.wait_for(q, lambda: [d for d in self.sink.dsns() if "ENV-MIXED" in d.as_string()], 20, "the DSN")
        dsn = [d for d in self.sink.dsns() if "ENV-MIXED" in d.as_string()][0]
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertEqual(dsn["To"], "alice@deliver.halyard.test")
        text = dsn.as_string()
        self.assertIn("Final-Recipient: rfc822; perm@deliver.halyard.test", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertIn("X-Halyard-Queue-ID: " + qid, text)
        self.assertNotIn("Final-Recipient: rfc822; temp@", text)
        with q.conn() as c:
            show = c.call("io.halyard.Queue.Show", {"queueId": qid})["parameters"]["message"]
            states = {r["address"]: r["state"] for r in show["recipients"]}
            self.assertEqual(states, {"ok@deliver.halyard.test": "delivered", "temp@deliver.halyard.test": "pending",
                                      "perm@deliver.halyard.test": "failed"})
            self.assertEqual(show["state"], "deferred")
            temp = [r for r in show["recipients"] if r["address"].startswith("temp")][0]
            self.assertIn("451", temp["lastError"])
        # The receiver recovers: the retry delivers the last recipient only.
        self.sink.tempfail = False
        self.wait_for(q, lambda: [m for m in self.sink.find(b"Subject: mixed") if m["rcpts"] == ["temp@deliver.halyard.test"]],
                      20, "the retried recipient")
        self.wait_empty(q)
        events = []
        while True:
            r = mon.recv(timeout=1)
            if r is None:
                break
            events.append((r["parameters"]["event"], r["parameters"].get("recipient")))
            if ("delivered", "temp@deliver.halyard.test") in events:
                break
        mon.close()
        self.assertIn(("deferred", "temp@deliver.halyard.test"), events)
        self.assertIn(("bounced", "perm@deliver.halyard.test"), events)

    def test_per_recipient_sender(self):
        """A recipient's own sender (the policy's Queue(sender => …), a
        list's bounce address): its own SMTP transaction with that MAIL FROM,
        and its failures reported to that address, the others' to the
        message's sender. A recipient's own EHLO name (Queue(helo => …)):
        its own session greeting with it."""
        self.addCleanup(setattr, self.sink, "tempfail", self.sink.tempfail)
        self.sink.tempfail = False
        q = self.start_queued()
        lists = "list-bounces@deliver.halyard.test"
        with q.conn() as c:
            r = enqueue(c, message("own-sender"), rcpts=(), envid="ENV-OWN-SENDER",
                        recipients=[{"address": "ok1@deliver.halyard.test", "sender": lists},
                                    {"address": "ok2@deliver.halyard.test"},
                                    {"address": "perm1@deliver.halyard.test", "sender": lists},
                                    {"address": "perm2@deliver.halyard.test"},
                                    {"address": "ok3@deliver.halyard.test", "sender": lists},
                                    {"address": "ok4@deliver.halyard.test", "helo": "out.lists.halyard.test"}])
            qid = r["parameters"]["queueId"]
            # A sender that is no address is refused, like the message's.
            bad = enqueue(c, message("own-sender-bad"), rcpts=(),
                          recipients=[{"address": "ok1@deliver.halyard.test", "sender": "no <address>"}])
            self.assertEqual(bad.get("error"), "org.varlink.service.InvalidParameter", bad)
            bad = enqueue(c, message("own-sender-bad"), rcpts=(),
                          recipients=[{"address": "ok1@deliver.halyard.test", "helo": "bad name\r\nRSET"}])
            self.assertEqual(bad.get("error"), "org.varlink.service.InvalidParameter", bad)
        # The DSNs quote the message too: count only what has a sender.
        copies = lambda: [m for m in self.sink.find(b"Subject: own-sender") if m["from"] not in ("", "<>")]
        self.wait_for(q, lambda: len(copies()) >= 3, 20, "three transactions")
        got = sorted((m["from"], m["helo"], sorted(m["rcpts"])) for m in copies())
        self.assertEqual(got, [("alice@deliver.halyard.test", "out.lists.halyard.test", ["ok4@deliver.halyard.test"]),
                               ("alice@deliver.halyard.test", "queued.halyard.test", ["ok2@deliver.halyard.test"]),
                               (lists, "queued.halyard.test", ["ok1@deliver.halyard.test", "ok3@deliver.halyard.test"])])
        self.wait_for(q, lambda: len([d for d in self.sink.dsns() if "ENV-OWN-SENDER" in d.as_string()]) >= 2, 20,
                      "a DSN to each sender")
        dsns = {d["To"]: d.as_string() for d in self.sink.dsns() if "ENV-OWN-SENDER" in d.as_string()}
        self.assertEqual(sorted(dsns), sorted([lists, "alice@deliver.halyard.test"]))
        self.assertIn("Final-Recipient: rfc822; perm1@deliver.halyard.test", dsns[lists])
        self.assertNotIn("perm2@", dsns[lists])
        self.assertIn("Final-Recipient: rfc822; perm2@deliver.halyard.test", dsns["alice@deliver.halyard.test"])
        self.assertNotIn("perm1@", dsns["alice@deliver.halyard.test"])
        self.wait_empty(q)
        self.assertRegex(q.log(), qid + r": to=<ok1@deliver.halyard.test>")

    def test_null_mx_bounces_at_once(self):
        q = self.start_queued()
        with q.conn() as c:
            enqueue(c, message("nullmx"), rcpts=("user@nullmx.halyard.test",), envid="ENV-NULLMX")
        self.wait_for(q, lambda: [d for d in self.sink.dsns() if "ENV-NULLMX" in d.as_string()], 20, "the null-MX DSN")
        text = [d for d in self.sink.dsns() if "ENV-NULLMX" in d.as_string()][0].as_string()
        self.assertIn("Status: 5.1.10", text)
        self.assertIn("Action: failed", text)
        self.wait_empty(q)

    def test_no_dsn_for_null_sender(self):
        q = self.start_queued()
        before = len(self.sink.dsns())
        with q.conn() as c:
            enqueue(c, message("null-sender"), sender="", rcpts=("perm@deliver.halyard.test",))
        self.wait_empty(q)
        time.sleep(1)
        self.assertEqual(len(self.sink.dsns()), before)
        self.assertIn("to=<perm@deliver.halyard.test>", q.log())

    def test_expiry(self):
        self.sink.tempfail = True
        q = self.start_queued("MaxLifetime=3s\n")
        with q.conn() as c:
            enqueue(c, message("expire"), rcpts=("temp2@deliver.halyard.test",), envid="ENV-EXPIRE")
        self.wait_for(q, lambda: [d for d in self.sink.dsns() if "ENV-EXPIRE" in d.as_string()], 30, "the expiry DSN")
        text = [d for d in self.sink.dsns() if "ENV-EXPIRE" in d.as_string()][0].as_string()
        self.assertIn("Status: 4.4.7", text)
        self.assertIn("expired", text)
        self.wait_empty(q)

    def test_delay_warning_then_operator_bounce(self):
        self.sink.tempfail = True
        q = self.start_queued("DelayWarning=1s\n")
        with q.conn() as c:
            qid = enqueue(c, message("delay"), rcpts=("temp3@deliver.halyard.test",), envid="ENV-DELAY")["parameters"]["queueId"]
        self.wait_for(q, lambda: [d for d in self.sink.dsns() if "ENV-DELAY" in d.as_string()], 20, "the delay warning")
        text = [d for d in self.sink.dsns() if "ENV-DELAY" in d.as_string()][0].as_string()
        self.assertIn("Action: delayed", text)
        self.assertIn("Will-Retry-Until:", text)
        with q.conn() as c:
            self.assertEqual(c.call("io.halyard.Queue.Show", {"queueId": qid})["parameters"]["message"]["state"], "deferred")
        # Exactly one warning, however many attempts follow.
        time.sleep(2.5)
        self.assertEqual(len([d for d in self.sink.dsns() if "ENV-DELAY" in d.as_string()]), 1)
        r = halyardctl("--runtime-dir=%s" % q.tmp.path, "queue", "bounce", qid)
        self.assertEqual(r.rc, 0, r)
        self.wait_for(q, lambda: len([d for d in self.sink.dsns() if "ENV-DELAY" in d.as_string()]) == 2, 20,
                      "the operator's bounce")
        text = [d for d in self.sink.dsns() if "ENV-DELAY" in d.as_string()][1].as_string()
        self.assertIn("Action: failed", text)
        self.assertIn("cancelled by the administrator", text)
        self.wait_empty(q)

    def test_connection_reuse(self):
        q = self.start_queued("MaxConnectionsPerDestination=1\n")
        with q.conn() as c:
            for i in range(4):
                enqueue(c, message("reuse-%d" % i), rcpts=("r%d@deliver.halyard.test" % i,))
        self.wait_for(q, lambda: all(self.sink.find(b"Subject: reuse-%d" % i) for i in range(4)), 20, "all four")
        peers = [self.sink.find(b"Subject: reuse-%d" % i)[0]["peer"] for i in range(4)]
        # Later messages rode on a session kept from an earlier one.
        self.assertLess(len(set(peers)), 4, peers)
        self.wait_empty(q)

    def test_ipv6_mx(self):
        """An MX with only an AAAA record, reached over IPv6 (::1)."""
        v6 = Sink(host="::1", port=self.sink.port)
        self.addCleanup(v6.stop)
        q = self.start_queued()
        with q.conn() as c:
            qid = enqueue(c, message("over-v6"), rcpts=("u@v6deliver.halyard.test",))["parameters"]["queueId"]
        self.wait_for(q, lambda: v6.find(b"Subject: over-v6"), 20, "the message over IPv6")
        self.assertEqual(v6.find(b"Subject: over-v6")[0]["peer"][0], "::1")
        self.wait_empty(q)
        self.assertIn(qid + ": to=<u@v6deliver.halyard.test>, relay=mx.v6deliver.halyard.test[::1]", q.log())

    def test_busy_destination_is_not_an_attempt(self):
        """Messages held back by MaxConnectionsPerDestination wait their
        turn; they are not deferred on the retry schedule (1h here)."""
        q = self.start_queued("MaxConnectionsPerDestination=1\nRetrySchedule=1h\n")
        with q.conn() as c:
            for i in range(6):
                enqueue(c, message("busy-%d" % i), rcpts=("b%d@deliver.halyard.test" % i,))
        self.wait_for(q, lambda: all(self.sink.find(b"Subject: busy-%d" % i) for i in range(6)), 20, "all six")
        self.wait_empty(q)

    def test_source_address_selection(self):
        q = self.start_queued("SourceAddresses=127.0.0.4\nSourceBySenderDomain=src.halyard.test=127.0.0.3\n")
        with q.conn() as c:
            enqueue(c, message("src-domain"), sender="a@src.halyard.test", rcpts=("s1@deliver.halyard.test",))
            enqueue(c, message("src-pool"), rcpts=("s2@deliver.halyard.test",))
        self.wait_for(q, lambda: self.sink.find(b"Subject: src-domain") and self.sink.find(b"Subject: src-pool"), 20,
                      "both messages")
        self.assertEqual(self.sink.find(b"Subject: src-domain")[0]["peer"][0], "127.0.0.3")
        self.assertEqual(self.sink.find(b"Subject: src-pool")[0]["peer"][0], "127.0.0.4")
        self.wait_empty(q)

    def test_starttls_to_postfix(self):
        """A real Postfix smtpd with STARTTLS as the next hop: the session is
        encrypted (TLS facts in the log) and the mail goes through it."""
        postfix = PostfixInstance(relay_port=self.sink.port, domain="tls.test")
        self.addCleanup(postfix.stop)
        q = self.start_queued("Routes=tls.test=smtp:[127.0.0.1]:%d lmtp.test=lmtp:[127.0.0.1]:%d\n"
                              % (postfix.port, self.lmtp.port))
        with q.conn() as c:
            qid = enqueue(c, message("via-postfix"), rcpts=("user@tls.test",))["parameters"]["queueId"]
        self.wait_for(q, lambda: self.sink.find(b"Subject: via-postfix"), 30, "the message through Postfix")
        self.wait_empty(q)
        self.assertRegex(q.log(), qid + r": to=<user@tls.test>, relay=127.0.0.1\[127.0.0.1\]:\d+, delay=\d+s, tls=TLS1\.[23]")

    def test_smtputf8_needed_but_not_offered(self):
        plain = Sink(smtputf8=False)
        self.addCleanup(plain.stop)
        q = self.start_queued("Routes=old.test=smtp:[127.0.0.1]:%d lmtp.test=lmtp:[127.0.0.1]:%d\n" % (plain.port, self.lmtp.port))
        with q.conn() as c:
            enqueue(c, "Subject: =?utf-8?q?x?=\r\nFrom: j\u00fcrgen@deliver.halyard.test\r\n\r\nhi\r\n".encode(),
                    rcpts=("user@old.test",), smtputf8=True, envid="ENV-UTF8")
        self.wait_for(q, lambda: [d for d in self.sink.dsns() if "ENV-UTF8" in d.as_string()], 20, "the SMTPUTF8 DSN")
        text = [d for d in self.sink.dsns() if "ENV-UTF8" in d.as_string()][0].as_string()
        self.assertIn("Status: 5.6.7", text)
        self.assertIn("SMTPUTF8", text)
        self.assertEqual(plain.messages, [])
        self.wait_empty(q)

    def test_lmtp_route(self):
        q = self.start_queued()
        with q.conn() as c:
            enqueue(c, message("lmtp"), rcpts=("a@lmtp.test", "b@lmtp.test"))
        self.wait_for(q, lambda: self.lmtp.find(b"Subject: lmtp"), 20, "the LMTP delivery")
        self.assertEqual(self.lmtp.find(b"Subject: lmtp")[0]["rcpts"], ["a@lmtp.test", "b@lmtp.test"])
        self.wait_empty(q)


class CrashDeliveryTest(unittest.TestCase):
    """kill -9 of queued, repeatedly, while clients enqueue and deliveries
    run: every acknowledged message reaches the receiver at least once."""

    def test_kill9_under_load_everything_arrives(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        sink = Sink()
        self.addCleanup(sink.stop)
        sink.tempfail = False
        # No DNS needed: everything is routed to the sink.
        config = ("[Queue]\nHostName=queued.test\nRetrySchedule=1s\nSmtpTimeout=10s\n"
                  "Routes=crash.test=smtp:[127.0.0.1]:%d\n" % sink.port)
        q = Queued(tmp, config=config)
        acked = kill9_rounds(q, 8, 4, random.Random(7),
                             lambda tag: (("Subject: %s\r\n\r\nx\r\n" % tag).encode(), tag), pause=(0.1, 0.5))
        q.start()

        def all_arrived():
            with sink.lock:
                got = {m["content"].split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages}
            return set(acked.values()) <= got
        wait_until(all_arrived, 60, what="every acknowledged message at the receiver")
        with sink.lock:
            tags = [m["content"].split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages]
        dups = len(tags) - len(set(tags))
        q.kill()
        self.assertGreater(len(acked), 30)
        print("crash delivery test: %d acknowledged, %d received, %d duplicates" % (len(acked), len(tags), dups))
        # A kill repeats what was delivered but not yet recorded: a handful
        # per round (about 5 per kill here), whatever the load; a busy
        # machine acknowledges fewer messages, so a share of them is no bound.
        self.assertLess(dups, max(len(acked) // 10, 8 * 10), "too many duplicates")


if __name__ == "__main__":
    unittest.main()
