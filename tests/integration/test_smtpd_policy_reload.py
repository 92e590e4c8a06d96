#!/usr/bin/python3
"""Policy reload under live traffic (issue 5): while clients keep sending,
`systemctl reload` (SIGHUP) swaps policies in and out, and a broken one is
refused. No session is dropped and no transaction fails; a transaction
finishes on the policy generation it started with, and new ones see the new
policy."""

import signal
import smtplib
import threading
import time
import unittest

import harness
from harness import wait_until
from test_queued import Queued
from test_smtpd import Smtpd, spool_with


def policy(generation):
    # The mailfrom handler names the generation in $context, and eod writes
    # it (and its own generation) into the message: a transaction that
    # started before a reload must show the same number twice.
    return (
        'on mailfrom {\n'
        '    $context["gen"] = "%d";\n'
        '}\n'
        'on rcptto {\n'
        '    if ($arguments["address"]["localpart"] == "gen%d-only")\n'
        '        Reject("Not in generation %d", [code => 550, enhanced => [5, 1, 1]]);\n'
        '}\n'
        'on eod {\n'
        '    $arguments["mail"]->addHeader("X-Policy-Gen", ($context["gen"] ?? "?") . "/%d");\n'
        '    Accept();\n'
        '}\n' % (generation, generation, generation, generation))


BROKEN = "on rcptto {\n    Reject(\"x\");\n    nosuchfunction(1);\n}\n"


class ReloadUnderTrafficTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.q = Queued(cls.tmp).start()
        cls.policy = cls.tmp / "policy.hal"
        cls.policy.write_text(policy(1))
        config = ("[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nTimeout=30s\n"
                  "Policy=%s\nPolicyTimeout=3s\n" % cls.policy)
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, config, name="reload").start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.tmp.cleanup()

    def reload(self, text, expect):
        before = self.smtpd.log().count(expect)
        self.policy.write_text(text)
        self.smtpd.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.smtpd.log().count(expect) > before, 10, what=expect)

    def test_a_transaction_keeps_its_generation(self):
        s = smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=20)
        s.ehlo("client.test")
        self.assertEqual(s.mail("a@client.test")[0], 250)
        self.assertEqual(s.rcpt("user@example.org")[0], 250)
        self.reload(policy(2), "Policy %s loaded" % self.policy)
        # Still generation 1 for this transaction: gen2-only is not refused.
        self.assertEqual(s.rcpt("gen2-only@example.org")[0], 250)
        self.assertEqual(s.data(b"Subject: straddle-1\r\n\r\nbody\r\n")[0], 250)
        # The next transaction on the same connection starts on generation 2.
        self.assertEqual(s.mail("a@client.test")[0], 250)
        self.assertEqual(s.rcpt("gen2-only@example.org")[0], 550)
        self.assertEqual(s.rcpt("user@example.org")[0], 250)
        self.assertEqual(s.data(b"Subject: straddle-2\r\n\r\nbody\r\n")[0], 250)
        s.quit()
        wait_until(lambda: spool_with(self.q.spool, "straddle-2"), 10, what="the messages")
        self.assertIn(b"X-Policy-Gen: 1/1", spool_with(self.q.spool, "straddle-1")[0])
        self.assertIn(b"X-Policy-Gen: 2/2", spool_with(self.q.spool, "straddle-2")[0])

    def test_b_reloads_under_traffic(self):
        stop = threading.Event()
        errors, sent = [], [0]
        lock = threading.Lock()

        def client(n):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=20) as s:
                        s.sendmail("load@client.test", ["user@example.org"],
                                   b"Subject: load-%d-%d\r\n\r\nbody\r\n" % (n, i))
                    with lock:
                        sent[0] += 1
                except Exception as e:  # any refusal or dropped session fails the test
                    with lock:
                        errors.append("client %d message %d: %r" % (n, i, e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            for generation in (3, 4, 5, 6):
                time.sleep(0.5)
                self.reload(policy(generation), "Policy %s loaded" % self.policy)
                time.sleep(0.3)
                self.reload(BROKEN, "Policy %s refused" % self.policy)
        finally:
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(errors, [])
        self.assertGreater(sent[0], 20)
        # After the refused one, the last good generation still serves.
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=20) as s:
            s.ehlo("client.test")
            s.mail("a@client.test")
            self.assertEqual(s.rcpt("gen6-only@example.org")[0], 550)
        self.assertIsNone(self.smtpd.proc.poll())


if __name__ == "__main__":
    unittest.main(verbosity=2)
