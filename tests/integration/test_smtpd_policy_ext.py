#!/usr/bin/python3
"""halyard-smtpd's policy builtins that talk to other services, against
real peers on loopback:

- ScanSA(): a real spamd (Debian's spamd, local tests only, a private site
  config) scores GTUBE high, so `ScanSA() > 5` rejects it at end of DATA
  with 550, and a clean message low; the score is memoised per
  transaction; spamd unreachable, or a listener that never answers, gives
  none (within the call's timeout) and the message is accepted, while
  other sessions go on meanwhile. ScanRPD() answers none.
- Queue(rcpt, [transport => ..., source_ip => ..., sender => ..., helo => ...]): one recipient goes
  through a named route (queued's Routes=) from a chosen source address
  (one of SourceAddresses=), one with its own envelope sender and EHLO name, the others
  the default way (Relayhost=); an
  address outside SourceAddresses= is refused by the queue
  (InvalidParameter) and the client gets a 451; the choices are stored
  with the envelope and survive kill -9.
- http(): GET and POST against a local HTTP server, $1 placeholders
  URL-encoded, status and body (and json) in the answer, a body cap, and a
  silent server answering ["error" => "timeout"] in time.
"""

import http.server
import json
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

import harness
from harness import wait_until
from smtp_peers import free_port
from test_delivery import Sink
from test_queued import Queued, enqueue
from test_smtpd import Smtpd

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def message(subject, body, to="bob@example.org"):
    return ("From: Alice <alice@client.test>\r\nTo: <%s>\r\nSubject: %s\r\n"
            "Date: %s\r\nMessage-ID: <%s@client.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n"
            % (to, subject, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
               os.urandom(8).hex(), body))


class Spamd:
    """Debian's spamd on 127.0.0.1, local tests only (-L), a private site
    config (the packaged .pre files, Bayes off), no user configs."""

    def __init__(self, tmp):
        # Its own directory: spamd runs as nobody when we are root, and the
        # test's temp dir is 0700.
        self.tmp = harness.TempDir(prefix="hyi-spamd-")
        os.chmod(self.tmp.path, 0o755)
        self.dir = self.tmp.path
        for f in os.listdir("/etc/spamassassin"):
            if f.endswith(".pre"):
                shutil.copy(os.path.join("/etc/spamassassin", f), self.dir / f)
        (self.dir / "local.cf").write_text("use_bayes 0\nbayes_auto_learn 0\n")
        self.port = free_port()
        argv = [shutil.which("spamd"), "-L", "-x", "--siteconfigpath=%s" % self.dir,
                "-i", "127.0.0.1:%d" % self.port, "-A", "127.0.0.1", "-m", "3", "-s", "stderr",
                "-H", str(self.dir)]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        self.stderr = open(tmp / "spamd.stderr", "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, start_new_session=True)
        harness._live_processes.append(self.proc)

    def wait(self):
        # spamd compiles its rules before it listens: seconds, more under load.
        wait_until(lambda: self.proc.poll() is not None or _connectable(self.port), 120, what="spamd")
        if self.proc.poll() is not None:
            raise RuntimeError("spamd exited: " + self.log())

    def log(self):
        with open(self.stderr.name, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.stderr.close()
        os.environ.get("KEEP") or self.tmp.cleanup()


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Silent:
    """Accepts connections, reads, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.drain, args=(c,), daemon=True).start()

    def drain(self, c):
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            c.close()


class HttpPeer:
    """python3 http.server on loopback: /echo answers the request as JSON,
    /status/N answers N, /big a large body, /slow never answers."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                path = self.path
                if path.startswith("/slow"):
                    time.sleep(8)
                    return
                if path.startswith("/status/"):
                    return self.answer(int(path.split("/")[2].split("?")[0]), b"status page", "text/plain")
                if path.startswith("/big"):
                    return self.answer(200, b"x" * 200000, "text/plain")
                q = urllib.parse.urlparse(path)
                self.answer(200, json.dumps({"method": method, "path": q.path, "query": q.query,
                                             "args": urllib.parse.parse_qs(q.query), "body": body,
                                             "ctype": self.headers.get("Content-Type"),
                                             "x": self.headers.get("X-Test")}).encode())

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the client hanging up on /big or /slow is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


POLICY = r'''
on rcptto {
    Accept();
}

on eod {
    $mail = $arguments["mail"];
    $subject = $mail->getHeader("Subject") ?? "";
    $score = none;
    if ($subject == "spamd down")
        $score = ScanSA([host => "127.0.0.1:%(down)d"]);
    else if ($subject == "spamd silent")
        $score = ScanSA([host => "127.0.0.1", port => %(silent)d, timeout => 4]);
    else if (not ($subject in ["no scan", "routed", "bad source", "http", "http slow"]))
        $score = ScanSA();
    // memoised: the same answer, no second scan
    if ($score != none and ScanSA() > 5)
        Reject("Message looks like spam", [code => 550, enhanced => [5, 7, 1]]);
    $mail->addHeader("X-Spam-Score", string($score ?? "none"));
    $mail->addHeader("X-RPD", string(ScanRPD() ?? "none"));
    if ($subject == "routed") {
        foreach ($transaction["recipients"] as $rcpt) {
            if ($rcpt["address"] == "special@example.org")
                Queue($rcpt, [transport => "special", source_ip => "127.0.0.3"]);
            else if ($rcpt["address"] == "literal@example.org")
                Queue($rcpt, [transport => "[127.0.0.1]:%(special)d"]);
            else if ($rcpt["address"] == "list@example.org")
                Queue($rcpt, [sender => "list-bounces@example.org", helo => "lists.example.org"]);
        }
    }
    if ($subject == "bad source")
        Queue("special@example.org", [source_ip => "192.0.2.99"]);
    if ($subject == "http") {
        $r = http("http://127.0.0.1:%(http)d/echo?u=$1&d=$2", [], ["a b&c=d", "ü/x"]);
        $mail->addHeader("X-Http-Status", string($r["status"] ?? "none"));
        $mail->addHeader("X-Http-Query", $r["json"]["query"] ?? "none");
        $p = http("http://127.0.0.1:%(http)d/echo", [method => "POST", body => "k=v",
                  headers => ["X-Test: yes", "Content-Type: application/x-www-form-urlencoded"]]);
        $mail->addHeader("X-Http-Post", ($p["json"]["method"] ?? "") . " " . ($p["json"]["body"] ?? "") . " " . ($p["json"]["x"] ?? ""));
        $n = http("http://127.0.0.1:%(http)d/status/404");
        $mail->addHeader("X-Http-404", string($n["status"] ?? "none") . " " . ($n["body"] ?? ""));
        $b = http("http://127.0.0.1:%(http)d/big", [max_size => 1000]);
        $mail->addHeader("X-Http-Big", $b["error"] ?? "no error");
        $c = http("http://127.0.0.1:%(closed)d/");
        $mail->addHeader("X-Http-Closed", $c["error"] ?? "no error");
        // a name: resolved through smtpd's resolver (libunbound), as every lookup
        $l = http("http://localhost:%(http)d/status/204");
        $mail->addHeader("X-Http-Name", string($l["status"] ?? $l["error"] ?? "none"));
        $x = http("http://nonexistent.invalid:%(http)d/status/204");
        $mail->addHeader("X-Http-NoName", $x["error"] ?? "no error");
    }
    if ($subject == "http slow") {
        $s = http("http://127.0.0.1:%(http)d/slow", [timeout => 2]);
        $mail->addHeader("X-Http-Slow", $s["error"] ?? "no error");
    }
    Accept();
}
'''


class PolicyExtTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.spamd = Spamd(cls.tmp) if shutil.which("spamd") else None
        cls.silent = Silent()
        cls.http = HttpPeer()
        cls.default_sink = Sink()
        cls.special_sink = Sink()
        cls.down = free_port()
        cls.closed = free_port()
        cls.q = Queued(cls.tmp, config=(
            "[Queue]\nHostName=queued.halyard.test\nRelayhost=[127.0.0.1]:%d\nRetrySchedule=1s\n"
            "Routes=special=smtp:[127.0.0.1]:%d\nSourceAddresses=127.0.0.1 127.0.0.3\nTLS=no\n"
            % (cls.default_sink.port, cls.special_sink.port))).start()
        cls.policy = cls.tmp / "ext.hal"
        cls.policy.write_text(POLICY % {"down": cls.down, "silent": cls.silent.port,
                                        "special": cls.special_sink.port, "http": cls.http.port,
                                        "closed": cls.closed})
        config = ("[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nTimeout=60s\n"
                  "Policy=%s\nPolicyTimeout=30s\nSpamdAddress=127.0.0.1:%d\n"
                  % (cls.policy, cls.spamd.port if cls.spamd else cls.down))
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, config, name="ext").start()
        if cls.spamd:
            cls.spamd.wait()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        if cls.spamd:
            cls.spamd.stop()
        cls.silent.stop()
        cls.http.stop()
        cls.default_sink.stop()
        cls.special_sink.stop()
        os.environ.get("KEEP") or cls.tmp.cleanup()

    def send(self, subject, body, rcpts=("bob@example.org",)):
        """(code, text) of the answer to the end of DATA."""
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=60) as s:
            s.ehlo("client.test")
            self.assertEqual(s.mail("alice@client.test")[0], 250)
            for r in rcpts:
                self.assertEqual(s.rcpt(r)[0], 250)
            return s.data(message(subject, body, rcpts[0]))

    def delivered(self, sink, marker, timeout=20):
        wait_until(lambda: sink.find(marker.encode()), timeout, what="delivery of " + marker)
        return sink.find(marker.encode())

    @staticmethod
    def header(content, name):
        for line in content.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(name.lower().encode() + b":"):
                return line.split(b":", 1)[1].strip().decode()
        return None

    # ---- ScanSA ------------------------------------------------------------

    def need_spamd(self):
        if not self.spamd:
            self.skipTest("spamd is not installed (Debian: spamd)")

    def test_scansa_gtube_rejected_clean_accepted(self):
        self.need_spamd()
        before = self.spamd.log().count("spamd: result:")
        code, text = self.send("gtube", "This is the GTUBE:\r\n" + GTUBE)
        self.assertEqual((code, text), (550, b"5.7.1 Message looks like spam"))
        code, text = self.send("clean", "Hello Bob,\r\n\r\nthe minutes of today's meeting follow next week.\r\n"
                                        "Regards, Alice\r\nmarker-clean-1")
        self.assertEqual(code, 250, text)
        m = self.delivered(self.default_sink, "marker-clean-1")[0]["content"]
        score = float(self.header(m, "X-Spam-Score"))
        self.assertLess(score, 5)
        self.assertEqual(self.header(m, "X-RPD"), "none")
        # Memoised: one CHECK per transaction although the policy asks twice.
        wait_until(lambda: self.spamd.log().count("spamd: result:") >= before + 2, 10, what="spamd's log")
        self.assertEqual(self.spamd.log().count("spamd: result:"), before + 2, self.spamd.log()[-3000:])

    def test_scansa_unreachable_is_none(self):
        code, text = self.send("spamd down", "marker-down-1 " + GTUBE)
        self.assertEqual(code, 250, text)
        m = self.delivered(self.default_sink, "marker-down-1")[0]["content"]
        self.assertEqual(self.header(m, "X-Spam-Score"), "none")
        wait_until(lambda: "ScanSA(): spamd cannot be reached" in self.smtpd.log(), 5, what="the warning")

    def test_scansa_silent_times_out_without_blocking(self):
        result = {}

        def slow():
            t0 = time.monotonic()
            result["answer"] = self.send("spamd silent", "marker-silent-1 " + GTUBE)
            result["took"] = time.monotonic() - t0

        th = threading.Thread(target=slow)
        th.start()
        time.sleep(0.3)
        # Another session meanwhile: not held up by the silent scanner.
        t0 = time.monotonic()
        code, text = self.send("no scan", "marker-meanwhile-1")
        took = time.monotonic() - t0
        self.assertEqual(code, 250, text)
        self.assertLess(took, 3)
        self.assertTrue(th.is_alive())
        th.join(30)
        self.assertEqual(result["answer"][0], 250, result)
        self.assertGreaterEqual(result["took"], 3.8)
        self.assertLess(result["took"], 10)
        m = self.delivered(self.default_sink, "marker-silent-1")[0]["content"]
        self.assertEqual(self.header(m, "X-Spam-Score"), "none")
        self.assertIn("ScanSA(): no answer from spamd in time", self.smtpd.log())

    # ---- Queue -------------------------------------------------------------

    def test_queue_routes_one_recipient(self):
        code, text = self.send("routed", "marker-routed-1",
                               rcpts=("special@example.org", "plain@example.org", "literal@example.org",
                                      "list@example.org"))
        self.assertEqual(code, 250, text)
        special = self.delivered(self.special_sink, "marker-routed-1")
        default = self.delivered(self.default_sink, "marker-routed-1")
        wait_until(lambda: len(self.special_sink.find(b"marker-routed-1")) >= 2, 20, what="both routed")
        special = self.special_sink.find(b"marker-routed-1")
        rcpts = sorted(r for m in special for r in m["rcpts"])
        self.assertEqual(rcpts, ["literal@example.org", "special@example.org"])
        peers = {m["rcpts"][0]: m["peer"][0] for m in special}
        self.assertEqual(peers["special@example.org"], "127.0.0.3")
        # list@ goes the default way too, in its own transaction, from the
        # sender the policy gave it.
        wait_until(lambda: len(self.default_sink.find(b"marker-routed-1")) >= 2, 20, what="both defaults")
        default = self.default_sink.find(b"marker-routed-1")
        self.assertEqual(sorted((m["from"], m["rcpts"], m["helo"]) for m in default),
                         [("alice@client.test", ["plain@example.org"], "queued.halyard.test"),
                          ("list-bounces@example.org", ["list@example.org"], "lists.example.org")])

    def test_queue_source_outside_pool_refused(self):
        code, text = self.send("bad source", "marker-badsource-1", rcpts=("special@example.org",))
        self.assertEqual((code, text[:5]), (451, b"4.3.5"), text)
        self.assertIn(b"Routing refused by the queue", text)
        with self.q.conn() as c:
            r = enqueue(c, b"Subject: x\r\n\r\nx\r\n", rcpts=(), recipients=[
                {"address": "a@example.org", "sourceAddress": "192.0.2.99"}])
            self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)
            r = enqueue(c, b"Subject: x\r\n\r\nx\r\n", rcpts=(), recipients=[
                {"address": "a@example.org", "route": "nosuchroute"}])
            self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)

    # ---- http --------------------------------------------------------------

    def test_http(self):
        code, text = self.send("http", "marker-http-1")
        self.assertEqual(code, 250, text)
        m = self.delivered(self.default_sink, "marker-http-1")[0]["content"]
        self.assertEqual(self.header(m, "X-Http-Status"), "200")
        q = urllib.parse.parse_qs(self.header(m, "X-Http-Query"))
        self.assertEqual(q, {"u": ["a b&c=d"], "d": ["ü/x"]})
        self.assertEqual(self.header(m, "X-Http-Post"), "POST k=v yes")
        self.assertEqual(self.header(m, "X-Http-404"), "404 status page")
        self.assertIn("too large", self.header(m, "X-Http-Big"))
        self.assertNotEqual(self.header(m, "X-Http-Closed"), "no error")
        self.assertEqual(self.header(m, "X-Http-Name"), "204")
        self.assertTrue(self.header(m, "X-Http-NoName").startswith("dns: "), self.header(m, "X-Http-NoName"))

    def test_http_timeout(self):
        t0 = time.monotonic()
        code, text = self.send("http slow", "marker-httpslow-1")
        took = time.monotonic() - t0
        self.assertEqual(code, 250, text)
        self.assertLess(took, 6)
        m = self.delivered(self.default_sink, "marker-httpslow-1")[0]["content"]
        self.assertEqual(self.header(m, "X-Http-Slow"), "timeout")



class QueueChoiceDurableTest(unittest.TestCase):
    """A recipient's route, source address, sender and EHLO name are part of the stored
    envelope: after kill -9 and a restart with the route pointed
    elsewhere, the retry goes through the route by name, from the chosen
    address."""

    def test_route_survives_kill9(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        sink = Sink()
        self.addCleanup(sink.stop)
        closed = free_port()
        base = ("[Queue]\nHostName=queued.halyard.test\nRelayhost=[127.0.0.1]:%d\nRetrySchedule=1h\n"
                "SourceAddresses=127.0.0.1 127.0.0.4\nTLS=no\n" % closed)
        q = Queued(tmp, config=base + "Routes=special=smtp:[127.0.0.1]:%d\n" % closed).start()
        with q.conn() as c:
            r = enqueue(c, b"Subject: durable\r\n\r\nmarker-durable-1\r\n", rcpts=(), recipients=[
                {"address": "a@example.org", "route": "special", "sourceAddress": "127.0.0.4",
                 "sender": "bounces@example.net", "helo": "out.example.net"}])
            self.assertIn("parameters", r, r)
            qid = r["parameters"]["queueId"]

        def deferred():
            with q.conn() as c:
                m = c.call("io.halyard.Queue.Show", {"queueId": qid})["parameters"]["message"]
                return m["state"] == "deferred" and m["recipients"][0]["attempts"] >= 1
        wait_until(deferred, 20, what="the first attempt to fail")
        rc, out, err = harness.halyardctl("--runtime-dir=%s" % q.socket.parent, "queue", "show", qid)
        self.assertEqual(rc, 0, err)
        self.assertIn("route special, from address 127.0.0.4, sender bounces@example.net, EHLO out.example.net", out)
        q.kill()
        q.config.write_text(base + "Routes=special=smtp:[127.0.0.1]:%d\n" % sink.port)
        q.start()
        self.addCleanup(lambda: q.proc.poll() is None and q.kill())
        with q.conn() as c:
            self.assertEqual(c.call("io.halyard.Queue.Retry", {"queueId": qid})["parameters"]["count"], 1)
        got = wait_until(lambda: sink.find(b"marker-durable-1"), 20, what="the retry through the route")
        self.assertEqual(got[0]["rcpts"], ["a@example.org"])
        self.assertEqual(got[0]["peer"][0], "127.0.0.4")
        self.assertEqual((got[0]["from"], got[0]["helo"]), ("bounces@example.net", "out.example.net"))


if __name__ == "__main__":
    unittest.main()
