#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""queued's SMTP/LMTP client (services/queued/queued-smtp.c) through the
smtp-deliver driver against real peers on 127.0.0.1: Postfix's smtp-sink, a
private Postfix with STARTTLS, aiosmtpd (SMTP and LMTP) and scripted
misbehaving servers (smtp_peers.py). Every wait is bounded."""

import json
import os
import pathlib
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smtp_peers  # noqa: E402
from smtp_peers import AioServer, PostfixInstance, ScriptedServer, SmtpSink, wait_until  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_ROOT = pathlib.Path(os.environ.get("HALYARD_SOURCE_ROOT") or HERE.parent.parent)


def _build_root():
    env = os.environ.get("HALYARD_BUILD_ROOT")
    if env:
        return pathlib.Path(env)
    for name in ("build-smtp", "build-integ", "build"):
        if (SOURCE_ROOT / name / "tests" / "integration" / "smtp-deliver").exists():
            return SOURCE_ROOT / name
    return SOURCE_ROOT / "build"


DRIVER = _build_root() / "tests" / "integration" / "smtp-deliver"
FROM = "sender@src.test"
MSG = b"From: sender@src.test\nTo: rcpt@dst.test\nSubject: test\n\nHello.\n"
SCALE = "0.05"   # RFC 5321 timeouts / 20: 15 s initial, 6 s DATA, 30 s final dot


class Delivery:
    def __init__(self, proc, elapsed):
        self.rc = proc.returncode
        self.stderr = proc.stderr.decode(errors="replace")
        self.elapsed = elapsed
        lines = [json.loads(l) for l in proc.stdout.decode().splitlines() if l.strip()]
        self.results = [l for l in lines if "rcpt" in l]
        sessions = [l["session"] for l in lines if "session" in l]
        self.session = sessions[-1] if sessions else None
        self.raw = proc.stdout.decode(errors="replace")

    def by_rcpt(self, transaction=1):
        return {r["rcpt"]: r for r in self.results if r["transaction"] == transaction}

    def __repr__(self):
        return "rc=%s\n%s\nstderr: %s" % (self.rc, self.raw, self.stderr)


def deliver(port, rcpts, message=MSG, args=(), frm=FROM, timeout=60, scale=SCALE):
    cmd = [str(DRIVER), "--timeout-scale", scale, "--helo", "client.test", *args,
           "127.0.0.1", str(port), frm, *rcpts]
    t0 = time.monotonic()
    p = subprocess.run(cmd, input=message, capture_output=True, timeout=timeout)
    return Delivery(p, time.monotonic() - t0)


def setUpModule():
    if not os.access(DRIVER, os.X_OK):
        raise RuntimeError("not built (set HALYARD_BUILD_ROOT): %s" % DRIVER)


def tearDownModule():
    smtp_peers._stop_all()


class TestCase(unittest.TestCase):
    def clean(self, d):
        # an ASan/UBSan build of the driver reports on stderr
        self.assertNotIn("Sanitizer", d.stderr, d)
        self.assertNotIn("runtime error", d.stderr, d)

    def ok(self, d, n):
        self.clean(d)
        self.assertEqual(d.rc, 0, d)
        self.assertEqual(len(d.results), n, d)
        for r in d.results:
            self.assertEqual(r["status"], "ok", d)
            self.assertEqual(r["code"] // 100, 2, d)
        self.assertIsNotNone(d.session, d)
        self.assertIsNone(d.session["error"], d)

    def all_status(self, d, status, stage=None, code=None, enhanced=None):
        self.clean(d)
        self.assertEqual(d.rc, 2, d)
        self.assertTrue(d.results, d)
        for r in d.results:
            self.assertEqual(r["status"], status, d)
            if stage is not None:
                self.assertEqual(r["stage"], stage, d)
            if code is not None:
                self.assertEqual(r["code"], code, d)
            if enhanced is not None:
                self.assertEqual(r["enhanced"], enhanced, d)


class Sink(TestCase):
    def test_plain_several_recipients(self):
        with SmtpSink() as sink:
            rcpts = ["a@dst.test", "b@dst.test", "c@dst.test"]
            d = deliver(sink.port, rcpts, args=["--starttls=may"])
            self.ok(d, 3)
            self.assertFalse(d.session["tls"])
            self.assertTrue(d.session["pipelining_used"])
            self.assertIn("PIPELINING", d.session["extensions"])
            self.assertEqual(d.session["greeting"], "sink.test ESMTP")
            for r in d.results:
                self.assertEqual(r["enhanced"], "2.0.0", d)
                self.assertEqual(r["stage"], "dot", d)
            t = wait_until(lambda: sink.transactions(), timeout=5, what="smtp-sink dump")
            self.assertEqual(len(t), 1)
            self.assertEqual(t[0]["mail"], "<%s>" % FROM)
            self.assertEqual(t[0]["rcpts"], ["<%s>" % r for r in rcpts])
            self.assertIn(b"Subject: test\n\nHello.\n", t[0]["raw"])  # smtp-sink dumps with LF

    def test_connection_reuse(self):
        with SmtpSink() as sink:
            d = deliver(sink.port, ["a@dst.test", "b@dst.test"], args=["--repeat", "3"])
            self.ok(d, 6)
            self.assertEqual(d.session["transactions"], 3)
            wait_until(lambda: len(sink.transactions()) == 3, timeout=5, what="3 dumps")


class Tls(TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = SmtpSink()
        cls.postfix = PostfixInstance(relay_port=cls.sink.port)

    @classmethod
    def tearDownClass(cls):
        cls.postfix.stop()
        cls.sink.stop()

    def test_starttls_require(self):
        before = len(self.sink.transactions())
        d = deliver(self.postfix.port, ["x@relay.test", "y@relay.test"], args=["--starttls=require"])
        self.ok(d, 2)
        s = d.session
        self.assertTrue(s["tls"], d)
        self.assertRegex(s["tls_version"], r"^TLS1\.[23]$")
        self.assertTrue(s["tls_cipher"], d)
        self.assertIn(s["tls_cipher"], s["tls_description"])
        self.assertIn("CN=%s" % self.postfix.subject_cn, s["peer_subject"])
        self.assertFalse(s["tls_verified"])
        self.assertNotIn("STARTTLS", s["extensions"])   # the EHLO after TLS no longer offers it
        for r in d.results:
            self.assertEqual(r["enhanced"], "2.0.0", d)
            self.assertIn("queued as", r["text"])
        wait_until(lambda: "TLS connection established from" in self.postfix.log_text(), timeout=10,
                   what="Postfix log line about TLS")
        log = self.postfix.log_text()
        self.assertRegex(log, r"TLS connection established from \S+: %s with cipher" % s["tls_version"].replace("TLS1.", "TLSv1\\."))
        wait_until(lambda: len(self.sink.transactions()) > before, timeout=20, what="relay to smtp-sink")

    def test_starttls_may_uses_tls(self):
        d = deliver(self.postfix.port, ["z@relay.test"], args=["--starttls=may"])
        self.ok(d, 1)
        self.assertTrue(d.session["tls"], d)

    def test_starttls_no(self):
        d = deliver(self.postfix.port, ["z@relay.test"], args=["--starttls=no"])
        self.ok(d, 1)
        self.assertFalse(d.session["tls"], d)
        self.assertIn("STARTTLS", d.session["extensions"])

    def test_verify_hook_rejects(self):
        d = deliver(self.postfix.port, ["z@relay.test"], args=["--starttls=require", "--tls-verify=reject"])
        self.all_status(d, "tempfail", stage="starttls", code=0, enhanced="4.7.5")
        self.assertIn("rejected by --tls-verify=reject", d.results[0]["text"])
        self.assertTrue(d.session["tls"])

    def test_verify_hook_accepts(self):
        d = deliver(self.postfix.port, ["z@relay.test"], args=["--starttls=require", "--tls-verify=accept"])
        self.ok(d, 1)
        self.assertTrue(d.session["tls_verified"])


class Scripted(TestCase):
    def test_require_tls_not_offered(self):
        with ScriptedServer() as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"], args=["--starttls=require"])
            self.all_status(d, "tempfail", stage="starttls", code=0, enhanced="4.7.4")
            self.assertIn("TLS is required, but was not offered", d.results[0]["text"])
            cmds = srv.session(0)["commands"]
            self.assertFalse([c for c in cmds if c.startswith("MAIL")], cmds)

    def test_helo_fallback(self):
        with ScriptedServer(ehlo="500 5.5.1 Error: command not recognized") as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            self.ok(d, 2)
            self.assertTrue(d.session["helo_fallback"])
            self.assertFalse(d.session["pipelining_used"])
            cmds = srv.session(0)["commands"]
            self.assertEqual(cmds[0], "EHLO client.test")
            self.assertEqual(cmds[1], "HELO client.test")
            self.assertEqual(len(srv.session(0)["messages"]), 1)

    def test_mixed_recipient_results(self):
        script = {"rcpt": {"b@dst.test": "450 4.2.1 Mailbox busy", "c@dst.test": "550 5.1.1 No such user"}}
        with ScriptedServer(**script) as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test", "c@dst.test"])
            self.assertEqual(d.rc, 2, d)
            r = d.by_rcpt()
            self.assertEqual((r["a@dst.test"]["status"], r["a@dst.test"]["code"]), ("ok", 250), d)
            self.assertEqual(r["a@dst.test"]["stage"], "dot")
            self.assertEqual((r["b@dst.test"]["status"], r["b@dst.test"]["code"],
                              r["b@dst.test"]["enhanced"], r["b@dst.test"]["text"]),
                             ("tempfail", 450, "4.2.1", "Mailbox busy"), d)
            self.assertEqual(r["b@dst.test"]["stage"], "rcpt")
            self.assertEqual((r["c@dst.test"]["status"], r["c@dst.test"]["code"],
                              r["c@dst.test"]["enhanced"], r["c@dst.test"]["text"]),
                             ("permfail", 550, "5.1.1", "No such user"), d)
            self.assertEqual(len(srv.session(0)["messages"]), 1)

    def test_mixed_results_lockstep(self):
        script = {"ehlo": ["8BITMIME"], "rcpt": {"b@dst.test": "452 4.5.3 Too many", "c@dst.test": "553 5.1.3 Bad"}}
        with ScriptedServer(**script) as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test", "c@dst.test"])
            r = d.by_rcpt()
            self.assertEqual([r[a]["status"] for a in ("a@dst.test", "b@dst.test", "c@dst.test")],
                             ["ok", "tempfail", "permfail"], d)
            self.assertFalse(d.session["pipelining_used"])

    def test_mail_4xx_all_temporary(self):
        with ScriptedServer(mail="451 4.3.0 Try again later") as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            self.all_status(d, "tempfail", stage="mail", code=451, enhanced="4.3.0")
            self.assertEqual(d.results[0]["text"], "Try again later")
            self.assertEqual(srv.session(0)["messages"], [])

    def test_mail_5xx_lockstep_all_permanent(self):
        with ScriptedServer(ehlo=["8BITMIME"], mail="553 5.7.1 Sender refused") as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            self.all_status(d, "permfail", stage="mail", code=553, enhanced="5.7.1")
            cmds = srv.session(0)["commands"]
            self.assertFalse([c for c in cmds if c.startswith("RCPT")], cmds)

    def test_data_5xx_all_permanent(self):
        with ScriptedServer(data="554 5.6.0 Not today") as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            self.all_status(d, "permfail", stage="data", code=554, enhanced="5.6.0")

    def test_dot_4xx_all_temporary(self):
        with ScriptedServer(dot="451 4.3.0 Queue file write error") as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            self.all_status(d, "tempfail", stage="dot", code=451, enhanced="4.3.0")

    def test_pipelining_used_when_offered(self):
        with ScriptedServer() as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test", "c@dst.test"])
            self.ok(d, 3)
            self.assertTrue(d.session["pipelining_used"])
            reads = srv.session(0)["reads"]
            group = [r for r in reads if r.startswith(b"MAIL FROM:")]
            self.assertEqual(len(group), 1, reads)
            self.assertEqual(group[0],
                             b"MAIL FROM:<sender@src.test>\r\nRCPT TO:<a@dst.test>\r\nRCPT TO:<b@dst.test>\r\n"
                             b"RCPT TO:<c@dst.test>\r\nDATA\r\n")

    def test_no_pipelining_when_not_offered(self):
        with ScriptedServer(ehlo=["8BITMIME", "ENHANCEDSTATUSCODES"]) as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            self.ok(d, 2)
            self.assertFalse(d.session["pipelining_used"])
            reads = srv.session(0)["reads"]
            cmd_reads = [r for r in reads if r[:4] in (b"MAIL", b"RCPT", b"DATA")]
            self.assertEqual(len(cmd_reads), 4, reads)
            for r in cmd_reads:
                self.assertEqual(r.count(b"\r\n"), 1, reads)

    def test_connection_reuse_rset(self):
        with ScriptedServer() as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"], args=["--repeat", "2"])
            self.ok(d, 4)
            self.assertEqual(len(srv.sessions), 1)
            cmds = srv.session(0)["commands"]
            verbs = [c.split(" ")[0].split(":")[0] for c in cmds]
            self.assertEqual(verbs, ["EHLO", "MAIL", "RCPT", "RCPT", "DATA",
                                     "RSET", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"], cmds)
            self.assertEqual(len(srv.session(0)["messages"]), 2)
            self.assertEqual(d.session["transactions"], 2)
            self.assertEqual(sorted(r["transaction"] for r in d.results), [1, 1, 2, 2])

    def test_connection_reuse_lockstep(self):
        with ScriptedServer(ehlo=[]) as srv:
            d = deliver(srv.port, ["a@dst.test"], args=["--repeat", "2"])
            self.ok(d, 2)
            verbs = [c.split(" ")[0].split(":")[0] for c in srv.session(0)["commands"]]
            self.assertEqual(verbs, ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "QUIT"])

    def test_smtputf8_needed_not_offered(self):
        with ScriptedServer() as srv:
            d = deliver(srv.port, ["ü@dst.test", "b@dst.test"])
            self.all_status(d, "permfail", stage="local", code=0, enhanced="5.6.7")
            self.assertIn("SMTPUTF8 is required, but was not offered", d.results[0]["text"])
            cmds = srv.session(0)["commands"]
            self.assertFalse([c for c in cmds if c.startswith("MAIL")], cmds)
            self.assertEqual(cmds[-1], "QUIT")

    def test_smtputf8_header_not_offered(self):
        with ScriptedServer() as srv:
            msg = "Subject: Grüße\n\nbody\n".encode()
            d = deliver(srv.port, ["a@dst.test"], message=msg)
            self.all_status(d, "permfail", stage="local", enhanced="5.6.7")

    def test_never_answers_timeout(self):
        with ScriptedServer(greeting=None) as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"], scale="0.004")  # 1.2 s
            self.all_status(d, "tempfail", stage="greeting", code=0, enhanced="4.4.2")
            self.assertIn("timeout after 1.2s waiting for the greeting", d.results[0]["text"])
            self.assertLess(d.elapsed, 10)
            self.assertGreater(d.elapsed, 1.0)

    def test_silent_at_rcpt_timeout(self):
        with ScriptedServer(ehlo=["8BITMIME"], silent_after="RCPT") as srv:
            d = deliver(srv.port, ["a@dst.test"], scale="0.004")
            self.all_status(d, "tempfail", stage="rcpt", code=0, enhanced="4.4.2")
            self.assertIn("waiting for the reply to RCPT TO", d.results[0]["text"])

    def test_slow_greeting_is_waited_for(self):
        with ScriptedServer(greeting_delay=0.6) as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.ok(d, 1)
            self.assertGreater(d.elapsed, 0.5)

    def test_greeting_554(self):
        with ScriptedServer(greeting="554 5.7.1 Go away") as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.all_status(d, "tempfail", stage="greeting", code=554, enhanced="")
            self.assertIn("refused to talk to me: 554 5.7.1 Go away", d.results[0]["text"])

    def test_connection_refused(self):
        port = smtp_peers.free_port()
        d = deliver(port, ["a@dst.test", "b@dst.test"])
        self.all_status(d, "tempfail", stage="connect", code=0, enhanced="4.4.1")
        self.assertIn("Connection refused", d.results[0]["text"])
        self.assertEqual(d.session["error"]["stage"], "connect")

    def test_close_mid_data(self):
        with ScriptedServer(close_in_data=4096) as srv:
            # 20 MB: more than loopback socket buffers hold, so the close hits the body
            body = b"Subject: big\n\n" + (b"x" * 75 + b"\n") * 270000
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"], message=body)
            self.all_status(d, "tempfail", stage="body", code=0, enhanced="4.4.2")
            self.assertIn("while sending the message body", d.results[0]["text"])

    def test_multiline_reply(self):
        with ScriptedServer(rcpt={"b@dst.test": "550-5.1.1 first line\r\n550-5.1.1 second line\r\n550 5.1.1 third"}) as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test"])
            r = d.by_rcpt()["b@dst.test"]
            self.assertEqual((r["code"], r["enhanced"], r["text"]), (550, "5.1.1", "first line\nsecond line\nthird"), d)
            self.assertEqual(d.by_rcpt()["a@dst.test"]["status"], "ok")

    def test_garbage_reply_is_protocol_error(self):
        with ScriptedServer(mail="hello, I am not SMTP") as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.all_status(d, "tempfail", stage="mail", code=0, enhanced="4.5.0")
            self.assertIn("protocol error", d.results[0]["text"])

    def test_inconsistent_multiline_is_protocol_error(self):
        with ScriptedServer(mail="250-2.1.0 ok\r\n550 5.0.0 no") as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.all_status(d, "tempfail", code=0, enhanced="4.5.0")

    def test_overlong_reply_line(self):
        with ScriptedServer(mail="250 " + "x" * 5000) as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.all_status(d, "tempfail", code=0, enhanced="4.5.0")
            self.assertIn("too long", d.results[0]["text"])

    def test_too_many_reply_lines(self):
        with ScriptedServer(mail="\r\n".join(["250-2.1.0 x"] * 120 + ["250 2.1.0 ok"])) as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.all_status(d, "tempfail", code=0, enhanced="4.5.0")
            self.assertIn("too many lines", d.results[0]["text"])

    def test_size_announced_and_enforced(self):
        with ScriptedServer(ehlo=["PIPELINING", "SIZE 100"]) as srv:
            d = deliver(srv.port, ["a@dst.test"], message=b"Subject: s\n\n" + b"y" * 200 + b"\n")
            self.all_status(d, "permfail", stage="local", enhanced="5.3.4")
            self.assertIn("exceeds size limit 100", d.results[0]["text"])
        with ScriptedServer(ehlo=["PIPELINING", "SIZE 100000"]) as srv:
            d = deliver(srv.port, ["a@dst.test"])
            self.ok(d, 1)
            self.assertEqual(d.session["size_max"], 100000)
            self.assertIn("MAIL FROM:<sender@src.test> SIZE=%d" % len(MSG), srv.session(0)["commands"])

    def test_null_sender_and_bad_recipient(self):
        with ScriptedServer() as srv:
            d = deliver(srv.port, ["a@dst.test", "bad<x>@dst.test"], frm="")
            r = d.by_rcpt()
            self.assertEqual(r["a@dst.test"]["status"], "ok", d)
            self.assertEqual((r["bad<x>@dst.test"]["status"], r["bad<x>@dst.test"]["stage"]), ("permfail", "local"))
            self.assertIn("MAIL FROM:<>", srv.session(0)["commands"])


class Aio(TestCase):
    def test_lmtp_per_recipient_replies(self):
        replies = {"b@dst.test": "452 4.2.2 Mailbox full", "c@dst.test": "550 5.1.1 User unknown"}
        with AioServer(lmtp=True, rcpt_replies=replies) as srv:
            d = deliver(srv.port, ["a@dst.test", "b@dst.test", "c@dst.test"], args=["--lmtp"])
            r = d.by_rcpt()
            self.assertEqual((r["a@dst.test"]["status"], r["a@dst.test"]["code"], r["a@dst.test"]["stage"]),
                             ("ok", 250, "dot"), d)
            self.assertEqual((r["b@dst.test"]["status"], r["b@dst.test"]["code"], r["b@dst.test"]["enhanced"],
                              r["b@dst.test"]["text"], r["b@dst.test"]["stage"]),
                             ("tempfail", 452, "4.2.2", "Mailbox full", "dot"), d)
            self.assertEqual((r["c@dst.test"]["status"], r["c@dst.test"]["code"], r["c@dst.test"]["enhanced"],
                              r["c@dst.test"]["stage"]),
                             ("permfail", 550, "5.1.1", "dot"), d)
            self.assertTrue(d.session["lmtp"])
            self.assertEqual(len(srv.messages), 1)
            self.assertEqual(srv.messages[0]["rcpts"], ["a@dst.test", "b@dst.test", "c@dst.test"])

    def test_lmtp_sink_reuse(self):
        with SmtpSink(lmtp=True) as sink:
            d = deliver(sink.port, ["a@dst.test", "b@dst.test"], args=["--lmtp", "--repeat", "2"])
            self.ok(d, 4)
            wait_until(lambda: len(sink.transactions()) == 2, timeout=5, what="2 LMTP dumps")

    def test_dot_stuffing_and_bare_lf(self):
        msg = (b"Subject: dots\n\n.leading dot\n..two dots\n.\nmiddle\r\n. space\nbare cr\rnext\n"
               b"last line without newline.")
        with AioServer() as srv:
            d = deliver(srv.port, ["a@dst.test"], message=msg)
            self.ok(d, 1)
            self.assertEqual(len(srv.messages), 1)
            want = msg.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
            self.assertEqual(srv.messages[0]["content"], want)

    def test_large_message_streamed(self):
        # 3 MiB through the 64 KiB output window: dots and bare LFs across chunk boundaries
        line = b".%s\n" % (b"z" * 899)        # 900-byte lines starting with a dot (aiosmtpd: <= 1000)
        msg = b"Subject: big\n\n" + line * 3500
        with AioServer() as srv:
            d = deliver(srv.port, ["a@dst.test"], message=msg)
            self.ok(d, 1)
            self.assertEqual(srv.messages[0]["content"], msg.replace(b"\n", b"\r\n"))

    def test_8bitmime_announced(self):
        with AioServer() as srv:
            d = deliver(srv.port, ["a@dst.test"], message="Subject: x\n\nnaïve body\n".encode())
            self.ok(d, 1)
            self.assertIn("BODY=8BITMIME", srv.messages[0]["mail_options"])
            self.assertNotIn("SMTPUTF8", srv.messages[0]["mail_options"])
            self.assertEqual(srv.messages[0]["content"], "Subject: x\r\n\r\nnaïve body\r\n".encode())
            d = deliver(srv.port, ["a@dst.test"])
            self.ok(d, 1)
            self.assertEqual(srv.messages[1]["mail_options"], ["SIZE=%d" % len(MSG)])

    def test_smtputf8_offered(self):
        with AioServer() as srv:
            d = deliver(srv.port, ["ü@dst.test"], message="Subject: Grüße\n\nx\n".encode())
            self.ok(d, 1)
            self.assertIn("SMTPUTF8", srv.messages[0]["mail_options"])
            self.assertEqual(srv.messages[0]["rcpts"], ["ü@dst.test"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
