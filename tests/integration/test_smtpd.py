#!/usr/bin/python3
"""halyard-smtpd against real clients (Python smtplib, swaks, raw sockets),
handing messages to a real halyard-queued under systemd-socket-activate:
plain and STARTTLS sends with a Received: header, pipelining, relay
control, SMTP smuggling, plaintext injection after STARTTLS, limits, the
queue being down, connections per address, AUTH (PLAIN, LOGIN, EXTERNAL by
client certificate, throttling), submission requiring AUTH, and the
GetStatus windows."""

import base64
import ctypes
import os
import re
import resource
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import unittest

import harness
from harness import BUILD_ROOT, VarlinkConn, wait_until
from smtp_peers import free_port, wait_port
from test_queued import Queued

SMTPD = BUILD_ROOT / "services" / "smtpd" / "halyard-smtpd"

BASE_CONFIG = """[Smtpd]
HostName=mx.halyard.test
LocalDomains=example.org
RelayDomains=relay.example
MaxMessageSize=100K
MaxRecipients=5
Timeout=30s
"""


class Smtpd:
    def __init__(self, tmp, queue_socket, config=BASE_CONFIG, name="smtpd", submission=False, fd_limit=None):
        self.tmp = tmp
        self.fd_limit = fd_limit
        self.name = name
        self.port = free_port()
        self.submission_port = free_port() if submission else None
        self.varlink = tmp / ("io.halyard.Smtpd-" + name)
        self.config = tmp / (name + ".conf")
        self.config.write_text(config + "Queue=unix:%s\n" % queue_socket)
        self.creds = tmp / "creds"
        self.proc = None

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        env["HALYARD_CONFIG"] = str(self.config)
        env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        argv = [str(SMTPD), "--listen-smtp=127.0.0.1:%d" % self.port, "--listen-varlink=unix:%s" % self.varlink]
        if self.submission_port:
            argv.append("--listen-submission=127.0.0.1:%d" % self.submission_port)
        self.stderr = open(self.tmp / (self.name + ".stderr"), "ab")
        limit = self.fd_limit
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))) if limit else None
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=env, start_new_session=True, preexec_fn=preexec)
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
        self.stderr.close()

    def log(self):
        return (self.tmp / (self.name + ".stderr")).read_text(errors="replace")

    def status(self):
        with VarlinkConn(str(self.varlink)) as c:
            r = c.call("io.halyard.Smtpd.GetStatus", {})
        assert "error" not in r, r
        return r["parameters"]


def spool_with(spool, marker):
    """The spooled files holding marker. The queue renames and removes files
    while we look (delivery, deferral): one that vanishes is skipped."""
    marker = marker.encode()
    found = []
    for p in spool.rglob("*"):
        try:
            data = p.read_bytes() if p.is_file() else b""
        except (FileNotFoundError, IsADirectoryError):
            continue
        if marker in data:
            found.append(data)
    return found


class Raw:
    """A raw SMTP connection for what smtplib will not do."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One complete (possibly multi-line) reply as bytes."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                d = self.sock.recv(65536)
                if not d:
                    raise EOFError("EOF after %r" % lines)
                self.buf += d
            line, _, self.buf = self.buf.partition(b"\r\n")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"\r\n".join(lines)

    def nothing_more(self, wait=0.3):
        self.sock.settimeout(wait)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            d = None
        finally:
            self.sock.settimeout(10)
        return not self.buf and d is None

    def close(self):
        self.sock.close()


MESSAGE = "From: a@client.test\r\nTo: bob@example.org\r\nSubject: test\r\n\r\nhello %s\r\n"


class SmtpdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        creds = cls.tmp / "creds"
        os.makedirs(creds, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-subj", "/CN=mx.halyard.test",
                        "-addext", "subjectAltName=DNS:mx.halyard.test",
                        "-keyout", str(creds / "smtpd-tls.key"), "-out", str(creds / "smtpd-tls.crt")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cls.q = Queued(cls.tmp).start()
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket).start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.tmp.cleanup()

    def spool_with(self, marker):
        return spool_with(self.q.spool, marker)

    def queue_senders(self):
        with self.q.conn() as c:
            c.send("io.halyard.Queue.List", {}, more=True)
            out = []
            while True:
                r = c.recv()
                self.assertNotIn("error", r, r)
                if "message" in r["parameters"]:
                    out.append(r["parameters"]["message"])
                if not r.get("continues"):
                    return out

    def test_smtplib_plain(self):
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=10) as s:
            code, ehlo = s.ehlo("client.test")
            self.assertEqual(code, 250)
            for ext in (b"PIPELINING", b"SIZE 102400", b"8BITMIME", b"SMTPUTF8", b"ENHANCEDSTATUSCODES",
                        b"STARTTLS", b"CHUNKING", b"DSN"):
                self.assertIn(ext, ehlo)
            s.mail("alice@client.test")
            s.rcpt("bob@example.org")
            code, resp = s.data(MESSAGE % "plain")
            self.assertEqual(code, 250, resp)
            self.assertRegex(resp.decode(), r"^2\.0\.0 Ok: queued as [0-9A-Z]+$")
            qid = resp.decode().split()[-1]
        msgs = self.spool_with("hello plain")
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0].startswith(b"Received: from client.test (127.0.0.1 [127.0.0.1])\r\n"
                                           b"\tby mx.halyard.test (halyard) with ESMTP id "), msgs[0][:200])
        ids = [m["queueId"] for m in self.queue_senders()]
        self.assertIn(qid, ids)
        self.assertIn("accepted from 127.0.0.1", self.smtpd.log())

    def test_swaks(self):
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.smtpd.port), "--from", "s@client.test",
                            "--to", "carol@example.org", "--helo", "swaks.test", "--body", "hello swaks",
                            "--pipeline"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("250 2.0.0 Ok: queued as", r.stdout)
        self.assertEqual(len(self.spool_with("hello swaks")), 1)

    def test_starttls(self):
        ctx = ssl.create_default_context(cafile=str(self.tmp / "creds" / "smtpd-tls.crt"))
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=10) as s:
            s.ehlo("tls.test")
            s._host = "mx.halyard.test"  # the name smtplib checks the certificate for
            self.assertEqual(s.starttls(context=ctx)[0], 220)
            code, ehlo = s.ehlo("tls.test")
            self.assertNotIn(b"STARTTLS", ehlo)
            s.sendmail("alice@client.test", ["bob@example.org"], MESSAGE % "starttls")
        msgs = self.spool_with("hello starttls")
        self.assertEqual(len(msgs), 1)
        self.assertIn(b" with ESMTPS id ", msgs[0])
        self.assertRegex(msgs[0].decode(), r"\(version=TLS1\.[23] cipher=[A-Z0-9-]+\)")

    def test_pipelining(self):
        c = Raw(self.smtpd.port)
        self.assertTrue(c.reply().startswith(b"220 "))
        c.send(b"EHLO pipe.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.org>\r\n"
               b"RCPT TO:<c@example.org>\r\nDATA\r\n")
        self.assertTrue(c.reply().startswith(b"250-mx.halyard.test"))
        self.assertEqual(c.reply(), b"250 2.1.0 Ok")
        self.assertEqual(c.reply(), b"250 2.1.5 Ok")
        self.assertEqual(c.reply(), b"250 2.1.5 Ok")
        self.assertTrue(c.reply().startswith(b"354 "))
        c.send(b"Subject: pipe\r\n\r\nhello pipelined\r\n.\r\nNOOP\r\nQUIT\r\n")
        self.assertTrue(c.reply().startswith(b"250 2.0.0 Ok: queued as "))
        self.assertEqual(c.reply(), b"250 2.0.0 Ok")
        self.assertTrue(c.reply().startswith(b"221 "))
        c.close()
        self.assertEqual(len(self.spool_with("hello pipelined")), 1)

    def test_relay_denied(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO relay.test\r\n")
        c.reply()
        c.send(b"MAIL FROM:<a@client.test>\r\n")
        c.reply()
        c.send(b"RCPT TO:<victim@foreign.example>\r\n")
        self.assertEqual(c.reply(), b"554 5.7.1 Relay access denied")
        c.send(b"RCPT TO:<ok@relay.example>\r\n")
        self.assertEqual(c.reply(), b"250 2.1.5 Ok")
        c.send(b"RCPT TO:<postmaster>\r\n")
        self.assertEqual(c.reply(), b"250 2.1.5 Ok")
        c.close()
        rejects = {r["reason"]: r["count"] for r in self.smtpd.status()["rejects"]}
        self.assertGreaterEqual(rejects["relay-denied"], 1)

    def test_relay_permitted_network(self):
        other = Smtpd(self.tmp, self.q.socket, BASE_CONFIG + "PermitNetworks=127.0.0.0/8\n", name="permit").start()
        try:
            with smtplib.SMTP("127.0.0.1", other.port, timeout=10) as s:
                s.ehlo("inside.test")
                s.sendmail("a@client.test", ["someone@foreign.example"], MESSAGE % "permitted relay")
        finally:
            other.stop()
        self.assertEqual(len(self.spool_with("hello permitted relay")), 1)

    def test_smuggling(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO smuggle.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        for _ in range(4):
            c.reply()
        c.send(b"Subject: smuggle\r\n\r\nsmuggle-one\n.\nMAIL FROM:<evil@client.test>\r\n"
               b"smuggle-two\r.\rRCPT TO:<x@example.org>\r\n.\r\n")
        # One reply for the whole thing: the bare LF/CR dots did not end the
        # data and nothing inside was executed. Default rule: refused.
        self.assertTrue(c.reply().startswith(b"550 5.6.11 "))
        self.assertTrue(c.nothing_more())
        c.send(b"NOOP\r\n")
        self.assertEqual(c.reply(), b"250 2.0.0 Ok")
        c.close()
        self.assertEqual(self.spool_with("smuggle-one"), [])

    def test_smuggling_normalized(self):
        other = Smtpd(self.tmp, self.q.socket, BASE_CONFIG + "BareNewline=normalize\n", name="normalize").start()
        try:
            c = Raw(other.port)
            c.reply()
            c.send(b"EHLO smuggle.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
            for _ in range(4):
                c.reply()
            c.send(b"Subject: smuggle\r\n\r\nnormal-one\n.\nMAIL FROM:<evil@client.test>\r\n.\r\n")
            # Accepted as one message: the bare LF became CRLF, but the dot
            # after it neither ended the data nor was unstuffed.
            self.assertTrue(c.reply().startswith(b"250 2.0.0 Ok: queued as "))
            self.assertTrue(c.nothing_more())
            c.close()
        finally:
            other.stop()
        msgs = self.spool_with("normal-one")
        self.assertEqual(len(msgs), 1)
        self.assertIn(b"\r\n\r\nnormal-one\r\n.\r\nMAIL FROM:<evil@client.test>\r\n", msgs[0])

    def test_bad_config_names_file_and_line(self):
        conf = self.tmp / "bad.conf"
        conf.write_text("[Smtpd]\nHostName=mx.halyard.test\nBareNewline=sometimes\n")
        r = subprocess.run([str(SMTPD), "--check", "--config=%s" % conf], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:3: error: BareNewline= must be reject or normalize" % conf, r.stderr)

    def test_starttls_injection(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO inject.test\r\n")
        c.reply()
        c.send(b"STARTTLS\r\nNOOP\r\n")
        self.assertEqual(c.reply(), b"220 2.0.0 Ready to start TLS")
        self.assertTrue(c.nothing_more())
        ctx = ssl.create_default_context(cafile=str(self.tmp / "creds" / "smtpd-tls.crt"))
        tls = ctx.wrap_socket(c.sock, server_hostname="mx.halyard.test")
        tls.sendall(b"NOOP\r\n")
        data = b""
        while not data.endswith(b"\r\n"):
            data += tls.recv(4096)
        # The only reply is the one to the NOOP sent inside TLS.
        self.assertEqual(data, b"250 2.0.0 Ok\r\n")
        # And the EHLO state was reset: MAIL needs a new EHLO.
        tls.sendall(b"MAIL FROM:<a@client.test>\r\n")
        data = b""
        while not data.endswith(b"\r\n"):
            data += tls.recv(4096)
        self.assertTrue(data.startswith(b"503 5.5.1"), data)
        tls.close()

    def test_line_too_long(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO long.test\r\nNOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
        c.reply()
        self.assertTrue(c.reply().startswith(b"500 5.5.6"))
        self.assertEqual(c.reply(), b"250 2.0.0 Ok")
        c.close()

    def test_message_too_large(self):
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=10) as s:
            s.ehlo("big.test")
            code, resp = s.mail("a@client.test", ["SIZE=200000"])
            self.assertEqual((code, resp[:5]), (552, b"5.3.4"))
            s.mail("a@client.test")
            s.rcpt("b@example.org")
            code, resp = s.data(MESSAGE % ("x" * 70 + "\r\n") * 2000)
            self.assertEqual((code, resp[:5]), (552, b"5.3.4"))

    def test_text_line_too_long(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO text.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        for _ in range(4):
            c.reply()
        # 998 octets + CRLF is the limit (RFC 5321 4.5.3.1.6); 999 is refused
        # at the end of the data, and nothing is queued.
        c.send(b"Subject: long\r\n\r\n" + b"y" * 998 + b"\r\nlong-line-marker" + b"z" * 999 + b"\r\n.\r\n")
        self.assertEqual(c.reply(), b"500 5.5.6 Message line longer than 1000 octets")
        c.send(b"NOOP\r\n")
        self.assertEqual(c.reply(), b"250 2.0.0 Ok")
        c.close()
        self.assertEqual(self.spool_with("long-line-marker"), [])

    def test_total_connections(self):
        other = Smtpd(self.tmp, self.q.socket, BASE_CONFIG + "MaxConnections=2\n", name="total").start()
        try:
            conns = [Raw(other.port) for _ in range(2)]
            for c in conns:
                self.assertTrue(c.reply().startswith(b"220 "))
            extra = Raw(other.port)
            self.assertEqual(extra.reply(), b"421 4.7.0 mx.halyard.test Too many connections, try again later")
            extra.close()
            conns.pop().close()
            # A freed slot is usable again.
            wait_until(lambda: other.status()["sessions"] == 1, 5, what="the closed session to end")
            again = Raw(other.port)
            self.assertTrue(again.reply().startswith(b"220 "))
            again.close()
            conns[0].close()
        finally:
            other.stop()

    def test_too_many_recipients(self):
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=10) as s:
            s.ehlo("many.test")
            s.mail("a@client.test")
            for i in range(5):
                self.assertEqual(s.rcpt("r%d@example.org" % i)[0], 250)
            code, resp = s.rcpt("r6@example.org")
            self.assertEqual((code, resp[:5]), (452, b"4.5.3"))

    def test_out_of_order(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO order.test\r\nDATA\r\nRCPT TO:<b@example.org>\r\n")
        c.reply()
        self.assertTrue(c.reply().startswith(b"503 5.5.1"))
        self.assertTrue(c.reply().startswith(b"503 5.5.1"))
        c.close()

    def test_too_many_errors(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"BOGUS\r\n" * 10)
        for _ in range(10):
            self.assertTrue(c.reply().startswith(b"500 5.5.2"))
        self.assertTrue(c.reply().startswith(b"421 4.7.0"))
        with self.assertRaises(EOFError):
            c.reply()
        c.close()

    def test_connections_per_address(self):
        other = Smtpd(self.tmp, self.q.socket, BASE_CONFIG + "MaxConnectionsPerAddress=3\n", name="perip").start()
        try:
            conns = [Raw(other.port) for _ in range(3)]
            for c in conns:
                self.assertTrue(c.reply().startswith(b"220 "))
            extra = Raw(other.port)
            self.assertTrue(extra.reply().startswith(b"421 4.7.0"))
            with self.assertRaises(EOFError):
                extra.reply()
            extra.close()
            for c in conns:
                c.close()
            rejects = {r["reason"]: r["count"] for r in other.status()["rejects"]}
            self.assertEqual(rejects["too-many-connections"], 1)
        finally:
            other.stop()

    def test_status(self):
        with smtplib.SMTP("127.0.0.1", self.smtpd.port, timeout=10) as s:
            s.sendmail("a@client.test", ["bob@example.org"], MESSAGE % "status")
        st = self.smtpd.status()
        self.assertEqual([l["listener"] for l in st["listeners"]], ["smtp", "submission", "submissions"])
        self.assertGreaterEqual(st["messagesAccepted"], 1)
        self.assertIsInstance(st["tlsShare"], float)
        # Everything in this class ran within the last minute.
        for window in ("lastMinute", "lastHour"):
            self.assertEqual(st[window]["messagesAccepted"], st["messagesAccepted"])
            self.assertEqual(st[window]["sessions"], st["sessionsTotal"])
        self.assertEqual(st["total"]["messagesAccepted"], st["messagesAccepted"])
        self.assertRegex(st["summary"], r"^\d+ sessions open; accepted \d+ in the last minute")

    def test_socket_activated(self):
        """Under systemd-socket-activate, the listeners come by name."""
        port = free_port()
        conf = self.tmp / "activated.conf"
        conf.write_text(BASE_CONFIG + "Queue=unix:%s\n" % self.q.socket)
        env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
        env.update(HALYARD_CONFIG=str(conf), CREDENTIALS_DIRECTORY=str(self.tmp / "creds"))
        log = open(self.tmp / "activated.stderr", "wb")
        # systemd-socket-activate passes on only the variables named with -E.
        p = subprocess.Popen([harness.SOCKET_ACTIVATE, "-l", "127.0.0.1:%d" % port, "--fdname=smtp",
                              "-E", "HALYARD_CONFIG", "-E", "CREDENTIALS_DIRECTORY", str(SMTPD)],
                             env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        harness._live_processes.append(p)
        try:
            wait_port(port, 5, p)
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                self.assertEqual(s.ehlo("activated.test")[0], 250)
                s.sendmail("a@client.test", ["bob@example.org"], MESSAGE % "socket activated")
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(10)
            log.close()
        self.assertEqual(len(self.spool_with("hello socket activated")), 1)
        self.assertIn("1 listeners", (self.tmp / "activated.stderr").read_text())


class FdLimitTest(unittest.TestCase):
    """Out of file descriptors: smtpd stops accepting for a moment instead
    of spinning on a listening socket it cannot accept from (and flooding the
    journal), keeps serving its open sessions, and accepts again once fds
    are free."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.q = Queued(cls.tmp).start()
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, name="fdlimit", fd_limit=48).start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.tmp.cleanup()

    def cpu_seconds(self):
        fields = open("/proc/%d/stat" % self.smtpd.proc.pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def test_out_of_fds(self):
        clients = [socket.create_connection(("127.0.0.1", self.smtpd.port), timeout=10) for _ in range(80)]
        try:
            wait_until(lambda: "not accepting for 100 ms" in self.smtpd.log(), 10, what="the pause")
            before, warnings = self.cpu_seconds(), self.smtpd.log().count("not accepting")
            time.sleep(2)
            self.assertLess(self.cpu_seconds() - before, 0.5, "smtpd spins while out of fds")
            self.assertLessEqual(self.smtpd.log().count("not accepting") - warnings, 25)
            # The sessions it has are served.
            self.assertTrue(clients[0].recv(512).startswith(b"220 "))
            clients[0].sendall(b"NOOP\r\n")
            self.assertTrue(clients[0].recv(512).startswith(b"250 "))
        finally:
            for c in clients:
                c.close()

        def greeted():
            with socket.create_connection(("127.0.0.1", self.smtpd.port), timeout=5) as c:
                return c.recv(512).startswith(b"220 ")
        wait_until(greeted, 10, what="a greeting once fds are free")
        self.assertIsNone(self.smtpd.proc.poll())


def yescrypt(password):
    """A yescrypt hash made by libxcrypt, as an operator's mkpasswd would."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    setting = lib.crypt_gensalt(b"$y$", 0, None, 0)
    return lib.crypt(password.encode(), setting).decode()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_client_pki(d):
    """A client CA and a client certificate (CN=relay-client) it signed, and a
    self-signed client certificate nobody vouches for."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=halyard test client CA", "-keyout", str(d / "client-ca.key"), "-out", str(d / "client-ca.pem"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/O=Test/CN=relay-client",
            "-keyout", str(d / "client.key"), "-out", str(d / "client.csr"))
    openssl("x509", "-req", "-in", str(d / "client.csr"), "-CA", str(d / "client-ca.pem"), "-CAkey", str(d / "client-ca.key"),
            "-CAcreateserial", "-days", "2", "-out", str(d / "client.pem"))
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=relay-client", "-keyout", str(d / "rogue.key"), "-out", str(d / "rogue.pem"))


def make_server_cert(creds):
    os.makedirs(creds, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=mx.halyard.test", "-addext", "subjectAltName=DNS:mx.halyard.test",
            "-keyout", str(creds / "smtpd-tls.key"), "-out", str(creds / "smtpd-tls.crt"))


def b64(s):
    return base64.b64encode(s.encode()).decode()


AUTH_CONFIG = BASE_CONFIG + """AuthPasswordFile=users
TLSClientCA=client-ca.pem
"""


class AuthTest(unittest.TestCase):
    """AUTH: PLAIN and LOGIN only under TLS, checked against a credential of
    crypt(3) hashes off the event loop; EXTERNAL by a verified client
    certificate; failures slowed down and then refused per address;
    submission needs AUTH; authenticated clients may relay."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        creds = cls.tmp / "creds"
        make_server_cert(creds)
        make_client_pki(cls.tmp)
        (creds / "client-ca.pem").write_bytes((cls.tmp / "client-ca.pem").read_bytes())
        (creds / "users").write_text("# halyard test users\nalice:%s\nbob:%s\n" % (
            yescrypt("alice secret"), subprocess.run(["openssl", "passwd", "-6", "bob secret"], check=True,
                                                      capture_output=True, text=True).stdout.strip()))
        cls.q = Queued(cls.tmp).start()
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, AUTH_CONFIG, name="auth", submission=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.tmp.cleanup()

    def spool_with(self, marker):
        return spool_with(self.q.spool, marker)

    def tls_context(self, cert=None):
        ctx = ssl.create_default_context(cafile=str(self.tmp / "creds" / "smtpd-tls.crt"))
        if cert:
            ctx.load_cert_chain(str(self.tmp / (cert + ".pem")), str(self.tmp / (cert + ".key")))
        return ctx

    def connect(self, port=None, cert=None, smtpd=None):
        s = smtplib.SMTP("127.0.0.1", port or (smtpd or self.smtpd).port, timeout=20)
        s.ehlo("auth.test")
        s._host = "mx.halyard.test"
        self.assertEqual(s.starttls(context=self.tls_context(cert))[0], 220)
        s.ehlo("auth.test")
        return s

    def test_plaintext_refused(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO plain.test\r\n")
        ehlo = c.reply()
        self.assertIn(b"STARTTLS", ehlo)
        self.assertNotIn(b"AUTH", ehlo)  # nothing to offer before TLS
        c.send(("AUTH PLAIN %s\r\n" % b64("\0alice\0alice secret")).encode())
        self.assertTrue(c.reply().startswith(b"538 5.7.11 "))
        c.close()

    def test_plain_relay_and_received(self):
        with self.connect() as s:
            self.assertIn("PLAIN", s.esmtp_features["auth"].split())
            self.assertIn("LOGIN", s.esmtp_features["auth"].split())
            self.assertNotIn("EXTERNAL", s.esmtp_features["auth"].split())  # no client certificate
            code, _ = s.docmd("MAIL FROM:<a@client.test>")
            self.assertEqual(code, 250)
            code, resp = s.docmd("RCPT TO:<someone@foreign.example>")
            self.assertEqual((code, resp[:5]), (554, b"5.7.1"))  # not yet authenticated
            s.docmd("RSET")
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice secret"))
            self.assertEqual((code, resp[:5]), (235, b"2.7.0"), resp)
            s.sendmail("alice@client.test", ["someone@foreign.example"], MESSAGE % "authenticated relay")
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice secret"))
            self.assertEqual((code, resp[:5]), (503, b"5.5.1"))  # once per session
        msgs = self.spool_with("hello authenticated relay")
        self.assertEqual(len(msgs), 1)
        self.assertIn(b" with ESMTPSA id ", msgs[0])  # RFC 3848
        self.assertNotIn(b"alice", msgs[0].split(b"\r\n\r\n")[0].split(b"From:")[0])  # user not named by default
        self.assertRegex(self.smtpd.log(), r"AUTH PLAIN from 127\.0\.0\.1: user alice: authenticated")

    def test_login_sha512(self):
        with self.connect() as s:
            s.user, s.password = "bob", "bob secret"
            code, resp = s.auth("LOGIN", s.auth_login)
            self.assertEqual(code, 235, resp)

    def test_external_client_certificate(self):
        with self.connect(cert="client") as s:
            self.assertIn("EXTERNAL", s.esmtp_features["auth"].split())
            code, resp = s.docmd("AUTH", "EXTERNAL =")
            self.assertEqual((code, resp[:5]), (235, b"2.7.0"), resp)
            s.sendmail("relay@client.test", ["x@foreign.example"], MESSAGE % "external relay")
        self.assertEqual(len(self.spool_with("hello external relay")), 1)
        self.assertIn("user relay-client: authenticated", self.smtpd.log())
        # The session's log entry records the certificate and its verification.
        entry = re.compile(r"ended: closed, 1 messages, TLS1\.3 [A-Z0-9-]+, "
                           r"client certificate CN=relay-client,O=Test \(verified\), user relay-client")
        wait_until(lambda: entry.search(self.smtpd.log()), 5, what="the session's log entry")

    def test_external_wrong_identity_or_untrusted_certificate(self):
        with self.connect(cert="client") as s:
            code, resp = s.docmd("AUTH", "EXTERNAL " + b64("someone-else"))
            self.assertEqual((code, resp[:5]), (535, b"5.7.8"))
        with self.connect(cert="rogue") as s:  # same CN, not signed by the client CA
            self.assertNotIn("EXTERNAL", s.esmtp_features.get("auth", "").split())
            code, resp = s.docmd("AUTH", "EXTERNAL =")
            self.assertEqual((code, resp[:5]), (535, b"5.7.8"))
        wait_until(lambda: "client certificate CN=relay-client (not verified: " in self.smtpd.log(), 5,
                   what="the rogue certificate's session entry")

    def test_submission_requires_auth(self):
        with self.connect(port=self.smtpd.submission_port) as s:
            code, resp = s.docmd("MAIL FROM:<alice@client.test>")
            self.assertEqual((code, resp[:5]), (530, b"5.7.0"))
            s.login("alice", "alice secret")
            s.sendmail("alice@client.test", ["friend@foreign.example"], MESSAGE % "submission")
        self.assertEqual(len(self.spool_with("hello submission")), 1)

    def test_failures_delayed_then_refused(self):
        other = Smtpd(self.tmp, self.q.socket, AUTH_CONFIG + "AuthMaxFailures=2\n", name="throttle").start()
        try:
            with self.connect(smtpd=other) as s:
                for expected in (1.0, 2.0):
                    t = time.monotonic()
                    code, resp = s.docmd("AUTH", "PLAIN " + b64("\0alice\0wrong"))
                    self.assertEqual((code, resp[:5]), (535, b"5.7.8"))
                    self.assertGreaterEqual(time.monotonic() - t, expected * 0.9)
                # Refused now, even with the right password, and on a new
                # connection too: the count is per address.
                code, resp = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice secret"))
                self.assertEqual((code, resp[:5]), (454, b"4.7.0"))
            with self.connect(smtpd=other) as s:
                code, resp = s.docmd("AUTH", "PLAIN " + b64("\0alice\0alice secret"))
                self.assertEqual((code, resp[:5]), (454, b"4.7.0"))
            st = other.status()
            self.assertEqual(st["lastMinute"]["authFailures"], 2)
            self.assertEqual(st["total"]["authSuccesses"], 0)
            self.assertRegex(other.log(), r"user alice: authentication failed")
        finally:
            other.stop()

    def test_unknown_user_and_bad_base64(self):
        with self.connect() as s:
            code, resp = s.docmd("AUTH", "PLAIN not*base64")
            self.assertEqual((code, resp[:5]), (501, b"5.5.2"))
            code, resp = s.docmd("AUTH", "CRAM-MD5")
            self.assertEqual((code, resp[:5]), (504, b"5.5.4"))
            code, resp = s.docmd("AUTH", "PLAIN " + b64("\0mallory\0guess"))
            self.assertEqual((code, resp[:5]), (535, b"5.7.8"))

    def test_received_names_user_when_allowed(self):
        other = Smtpd(self.tmp, self.q.socket, AUTH_CONFIG + "ReceivedAuthUser=yes\n", name="named").start()
        try:
            with self.connect(smtpd=other) as s:
                s.login("alice", "alice secret")
                s.sendmail("alice@client.test", ["bob@example.org"], MESSAGE % "named user")
        finally:
            other.stop()
        msgs = self.spool_with("hello named user")
        self.assertEqual(len(msgs), 1)
        self.assertIn(b"(authenticated user alice)", msgs[0])


class SessionLimitsTest(unittest.TestCase):
    """Commands per session, the idle timeout and the total session time (a
    slow client that keeps the idle timer happy still gets cut off)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.q = Queued(cls.tmp).start()
        cls.smtpd = Smtpd(cls.tmp, cls.q.socket, BASE_CONFIG.replace("Timeout=30s\n", "") +
                          "MaxCommands=5\nTimeout=1s\nSessionTimeout=3s\n", name="limits").start()

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.tmp.cleanup()

    def test_command_limit(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"NOOP\r\n" * 6)
        for _ in range(5):
            self.assertEqual(c.reply(), b"250 2.0.0 Ok")
        self.assertTrue(c.reply().startswith(b"421 4.7.0 "))
        with self.assertRaises(EOFError):
            c.reply()
        c.close()

    def test_idle_timeout(self):
        c = Raw(self.smtpd.port)
        c.reply()
        t = time.monotonic()
        self.assertEqual(c.reply(), b"421 4.4.2 mx.halyard.test Error: timeout exceeded")
        self.assertLess(time.monotonic() - t, 2.5)
        c.close()

    def test_session_time_limit(self):
        c = Raw(self.smtpd.port)
        c.reply()
        c.send(b"EHLO slow.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        for _ in range(4):
            c.reply()
        t = time.monotonic()
        # A byte every half second keeps the idle timer from firing.
        with self.assertRaises((EOFError, BrokenPipeError, ConnectionResetError)):
            while time.monotonic() - t < 6:
                c.send(b"x")
                c.sock.settimeout(0.5)
                try:
                    d = c.sock.recv(4096)
                    if not d:
                        raise EOFError
                    c.buf += d
                except socket.timeout:
                    pass
        self.assertIn(b"421 4.4.2 mx.halyard.test Error: session time limit exceeded", c.buf)
        self.assertLess(time.monotonic() - t, 4)
        c.close()
        self.assertIn("session time limit", self.smtpd.log())


class QueueRestartTest(unittest.TestCase):
    def test_pooled_connection_survives_queue_restart(self):
        """smtpd keeps idle connections to the queue for the next message; when
        the queue restarted in between, the message goes over a new one
        instead of getting a 451."""
        tmp = harness.TempDir()
        try:
            q = Queued(tmp).start()
            smtpd = Smtpd(tmp, q.socket).start()
            try:
                with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as s:
                    s.ehlo("restart.test")
                    s.sendmail("a@client.test", ["bob@example.org"], MESSAGE % "before restart")
                    q.kill(signal.SIGTERM)
                    os.unlink(q.socket)
                    q.start()
                    s.sendmail("a@client.test", ["bob@example.org"], MESSAGE % "after restart")
                self.assertIn("accepted from", smtpd.log())
                self.assertNotIn("queue-unavailable", smtpd.log())
                for marker in ("hello before restart", "hello after restart"):
                    self.assertEqual(len(spool_with(q.spool, marker)), 1)
            finally:
                smtpd.stop()
                if q.proc.poll() is None:
                    q.kill()
        finally:
            tmp.cleanup()


class QueueDownTest(unittest.TestCase):
    def test_queue_down(self):
        tmp = harness.TempDir()
        try:
            smtpd = Smtpd(tmp, tmp / "no-such-queue").start()
            try:
                with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as s:
                    s.ehlo("down.test")
                    s.mail("a@client.test")
                    s.rcpt("b@example.org")
                    code, resp = s.data(MESSAGE % "down")
                    self.assertEqual((code, resp[:5]), (451, b"4.3.0"))
                    self.assertNotIn(b"queued", resp)
                    # The session goes on.
                    self.assertEqual(s.noop()[0], 250)
            finally:
                smtpd.stop()
        finally:
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
