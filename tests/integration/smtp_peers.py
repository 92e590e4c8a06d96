# SPDX-License-Identifier: MIT
"""Real SMTP/LMTP peers for the delivery client's integration tests, all on
127.0.0.1 and all stopped by stop() (and at exit):

- SmtpSink: Postfix's smtp-sink, dumping each transaction to a file
  (X-Mail-Args / X-Rcpt-Args headers + the message) so tests can count.
- PostfixInstance: a private Postfix (own config, queue and log in a temp
  dir) whose smtpd offers STARTTLS with a self-signed certificate made with
  openssl, relaying everything to an SmtpSink.
- AioServer: aiosmtpd as an SMTP or LMTP server; LMTP replies after DATA are
  scripted per recipient.
- ScriptedServer: a small misbehaving SMTP server (threads, blocking
  sockets): chosen EHLO/HELO behaviour, replies per command and recipient,
  delays, silence, closing in the middle of DATA. It records every recv()
  chunk and every command so tests can see pipelining and RSET.
"""

import atexit
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

LOOPBACK = "127.0.0.1"
_live = []


def _stop_all():
    for p in list(_live):
        try:
            p.stop()
        except Exception:
            pass


atexit.register(_stop_all)


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s before listening" % proc.returncode)
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on %s:%d after %.1fs" % (LOOPBACK, port, timeout))


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


class _Peer:
    def __init__(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="hy-smtp-", dir="/tmp"))
        _live.append(self)

    def _cleanup(self):
        if self in _live:
            _live.remove(self)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


class SmtpSink(_Peer):
    """smtp-sink on 127.0.0.1:port; transactions() parses its dump files."""

    def __init__(self, lmtp=False, extra_args=()):
        super().__init__()
        self.port = free_port()
        self.dump = self.tmp / "dump"
        self.dump.mkdir()
        os.chmod(self.tmp, 0o755)
        os.chmod(self.dump, 0o777)
        args = ["/usr/sbin/smtp-sink", "-u", "nobody", "-d", str(self.dump) + "/%M.", "-h", "sink.test"]
        if lmtp:
            args.append("-L")
        args += list(extra_args) + ["%s:%d" % (LOOPBACK, self.port), "64"]
        with open(self.tmp / "stderr", "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_port(self.port, proc=self.proc)
        except Exception:
            self.stop()
            raise

    def transactions(self):
        """[{"mail": "...", "rcpts": [...], "body": bytes}] for each completed dump."""
        out = []
        for f in sorted(self.dump.iterdir()):
            data = f.read_bytes()
            mail, rcpts = None, []
            head, _, body = data.partition(b"\nReceived: ")
            for line in head.split(b"\n"):
                if line.startswith(b"X-Mail-Args: "):
                    mail = line[13:].decode(errors="replace").strip()
                elif line.startswith(b"X-Rcpt-Args: "):
                    rcpts.append(line[13:].decode(errors="replace").strip())
            out.append({"mail": mail, "rcpts": rcpts, "raw": data})
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._cleanup()


class PostfixInstance(_Peer):
    """A private Postfix: smtpd on 127.0.0.1:port with STARTTLS (self-signed),
    relaying everything to relay_port (an SmtpSink). Log in self.log."""

    def __init__(self, relay_port, tls=True, domain="relay.test"):
        super().__init__()
        self.port = free_port()
        self.etc = self.tmp / "etc"
        self.spool = self.tmp / "spool"
        self.data = self.tmp / "data"
        self.log = self.tmp / "postfix.log"
        for d in (self.etc, self.spool, self.data):
            d.mkdir()
        os.chmod(self.tmp, 0o755)
        shutil.chown(self.data, "postfix")
        self.cert = self.etc / "cert.pem"
        self.key = self.etc / "key.pem"
        self.subject_cn = "mx.%s" % domain
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=%s/O=halyard test" % self.subject_cn,
                        "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        tls_conf = ("smtpd_tls_security_level = may\n"
                    "smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n"
                    "smtpd_tls_loglevel = 1\n" % (self.cert, self.key)) if tls else \
            "smtpd_tls_security_level = none\n"
        (self.etc / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            "queue_directory = %s\ndata_directory = %s\nmeta_directory = /etc/postfix\n"
            "myhostname = mx.%s\nmydomain = %s\nmydestination =\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
            "relay_domains = %s\nrelayhost = [127.0.0.1]:%d\n"
            "smtp_dns_support_level = disabled\nsmtp_host_lookup = native\n"
            "alias_maps =\nalias_database =\nlocal_recipient_maps =\nbiff = no\n"
            "smtputf8_enable = yes\n"
            "smtp_tls_security_level = none\n%s"
            "maillog_file = %s\nmaillog_file_prefixes = /tmp\n" % (self.spool, self.data, domain, domain, domain, relay_port, tls_conf, self.log))
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

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self._cleanup()


class AioServer(_Peer):
    """aiosmtpd (SMTP or LMTP) in a thread. For LMTP, rcpt_replies maps a
    recipient to its reply after DATA (default "250 2.0.0 delivered").
    messages: [{"mail_from", "mail_options", "rcpts", "content"(bytes)}]."""

    def __init__(self, lmtp=False, rcpt_replies=None, smtputf8=True):
        super().__init__()
        from aiosmtpd.controller import Controller
        from aiosmtpd.lmtp import LMTP
        from aiosmtpd.smtp import SMTP

        self.port = free_port()
        self.messages = []
        replies = dict(rcpt_replies or {})
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append({"mail_from": envelope.mail_from,
                                       "mail_options": list(envelope.mail_options),
                                       "rcpts": list(envelope.rcpt_tos),
                                       "content": envelope.original_content})
                if not lmtp:
                    return "250 2.0.0 Ok: queued"
                # LMTP: one reply per accepted recipient, in RCPT order (pushed as one block)
                return "\r\n".join(replies.get(r, "250 2.0.0 <%s> delivered" % r) for r in envelope.rcpt_tos)

        class Ctl(Controller):
            def factory(self):
                cls = LMTP if lmtp else SMTP
                return cls(self.handler, decode_data=False, enable_SMTPUTF8=smtputf8,
                           ident="aiosmtpd-test")

        self.controller = Ctl(Handler(), hostname=LOOPBACK, port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        self._cleanup()


class ScriptedServer(_Peer):
    """A scripted SMTP server. Options (all optional):
      greeting     "220 ..." or None to never say anything
      greeting_delay  seconds before the greeting
      ehlo         list of extension keywords (e.g. ["PIPELINING", "8BITMIME"]),
                   or a reply string such as "500 5.5.1 unknown" to refuse EHLO
      helo         reply to HELO
      mail         reply to MAIL (default 250)
      rcpt         {address: reply}, others get "250 2.1.5 Ok"
      data         reply to DATA (default 354)
      dot          reply after the final dot (default 250)
      silent_after a command verb ("MAIL", "RCPT", ...): never answer it or anything after
      close_in_data  close the connection after this many body bytes
    Records (per connection, in self.sessions): "reads" (raw recv chunks in
    command mode), "commands" (lines), "messages" (bodies, dot-unstuffed)."""

    def __init__(self, **script):
        super().__init__()
        self.script = script
        self.sessions = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.conns = []
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            rec = {"reads": [], "commands": [], "messages": []}
            with self.lock:
                self.sessions.append(rec)
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, rec), daemon=True)
            self.threads.append(t)
            t.start()

    def _recv(self, conn):
        while not self.stopping.is_set():
            try:
                return conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return b""

    def _serve(self, conn, rec):
        s = self.script
        silent = False
        try:
            if s.get("greeting_delay"):
                if self.stopping.wait(s["greeting_delay"]):
                    return
            greeting = s.get("greeting", "220 scripted.test ESMTP")
            if greeting is None:
                silent = True
            else:
                conn.sendall(greeting.encode() + b"\r\n")
            buf = b""
            while not self.stopping.is_set():
                chunk = self._recv(conn)
                if not chunk:
                    return
                rec["reads"].append(chunk)
                buf += chunk
                while b"\n" in buf and not self.stopping.is_set():
                    line, buf = buf.split(b"\n", 1)
                    line = line.rstrip(b"\r").decode("utf-8", errors="replace")
                    rec["commands"].append(line)
                    verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
                    if s.get("silent_after") == verb:
                        silent = True
                    if silent:
                        continue
                    reply = self._reply(verb, line)
                    conn.sendall(reply.encode() + b"\r\n")
                    if verb == "DATA" and reply.startswith("354"):
                        body, buf, ok = self._read_body(conn, buf)
                        if not ok:
                            return
                        rec["messages"].append(body)
                        conn.sendall(s.get("dot", "250 2.0.0 Ok: queued").encode() + b"\r\n")
                    if verb == "QUIT":
                        return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _reply(self, verb, line):
        s = self.script
        if verb == "EHLO":
            e = s.get("ehlo", ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"])
            if isinstance(e, str):
                return e
            lines = ["scripted.test"] + list(e)
            return "\r\n".join("250%s%s" % ("-" if i < len(lines) - 1 else " ", l) for i, l in enumerate(lines))
        if verb == "HELO":
            return s.get("helo", "250 scripted.test")
        if verb == "MAIL":
            return s.get("mail", "250 2.1.0 Ok")
        if verb == "RCPT":
            addr = line.split(":", 1)[1].strip() if ":" in line else ""
            addr = addr.split(">", 1)[0].lstrip("<")
            return s.get("rcpt", {}).get(addr, "250 2.1.5 Ok")
        if verb == "DATA":
            return s.get("data", "354 End data with <CR><LF>.<CR><LF>")
        if verb == "RSET":
            return "250 2.0.0 Ok"
        if verb == "NOOP":
            return "250 2.0.0 Ok"
        if verb == "QUIT":
            return "221 2.0.0 Bye"
        return "502 5.5.2 Error: command not recognized"

    def _read_body(self, conn, buf):
        limit = self.script.get("close_in_data")
        while b"\r\n.\r\n" not in b"\r\n" + buf:
            if limit is not None and len(buf) >= limit:
                return None, b"", False
            chunk = self._recv(conn)
            if not chunk:
                return None, b"", False
            buf += chunk
        if limit is not None:
            return None, b"", False
        data = b"\r\n" + buf
        i = data.index(b"\r\n.\r\n")
        body, rest = data[2:i + 2], data[i + 5:]
        lines = body.split(b"\r\n")
        body = b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)
        return body, rest, True

    def session(self, i=0):
        with self.lock:
            return self.sessions[i] if i < len(self.sessions) else None

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)
        self._cleanup()
