#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""halyard's varlink server (shared/varlink.c) as halyard-testd runs it,
spoken to over real sockets by a raw client: protocol, limits, fd passing,
concurrency, socket activation, reload, drain, credentials, logging."""

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import VarlinkConn, wait_until  # noqa: E402

T = "io.halyard.Test."
STD = "org.varlink.service."


def setUpModule():
    harness.check_binaries()


def tearDownModule():
    harness.kill_all()


class SocketActivation(harness.TestCase):
    def test_starts_on_first_connection(self):
        t = self.start_testd(probe=False)
        # Listening, but nothing connected yet: still systemd-socket-activate.
        self.assertEqual(os.path.basename(t.exe() or ""), "systemd-socket-activate")
        self.assertNotIn("serving io.halyard.Test", t.stderr())
        pid = t.pid
        with t.connect() as c:
            r = c.call(STD + "GetInfo", {})
        self.assertEqual(r["parameters"]["product"], "halyard-testd")
        # socket-activate exec'd testd in place, with the fd named "varlink".
        self.assertEqual(t.exe(), os.path.realpath(harness.TESTD))
        self.assertEqual(t.pid, pid)
        t.wait_stderr("serving io.halyard.Test")
        self.assertIn("Execing", t.stderr())
        self.assertIsNone(t.proc.poll())

    def test_listen_option(self):
        t = self.start_testd(activate=False)
        self.assertEqual(t.exe(), os.path.realpath(harness.TESTD))
        self.assertEqual(t.status()["greeting"], "hello")

    def test_no_socket_is_an_error(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["HALYARD_CONFIG"] = str(tmp / "none.conf")
        p = subprocess.run([str(harness.TESTD)], env=env, capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn(b"No listening socket", p.stderr)


class Protocol(harness.TestCase):
    """Protocol behaviour; one testd (under socket activation) for all."""

    @classmethod
    def setUpClass(cls):
        cls.testd = harness.Testd(config="[Test]\nGreeting=protocol\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.testd.stop()

    def conn(self):
        return self.connect(self.testd)

    def assertError(self, reply, error, parameters=None):
        self.assertEqual(reply.get("error"), error, reply)
        if parameters is not None:
            self.assertEqual(reply.get("parameters"), parameters, reply)
        self.assertNotIn("continues", reply)

    def assertAlive(self, c):
        self.assertEqual(c.call(T + "Echo", {"text": "still here"}), {"parameters": {"text": "still here"}})

    # -- org.varlink.service

    def test_get_info_exact(self):
        c = self.conn()
        raw = None
        c.send(STD + "GetInfo", {})
        raw = c.recv_raw()
        reply = json.loads(raw)
        self.assertEqual(set(reply), {"parameters"}, raw)
        self.assertEqual(reply["parameters"], {
            "vendor": "halyard",
            "product": "halyard-testd",
            "version": harness.project_version(),
            "url": "",
            "interfaces": ["org.varlink.service", "io.halyard.Test"],
        })
        # Absent and null parameters mean {} as well.
        self.assertEqual(c.call(STD + "GetInfo"), reply)
        c.send_raw(b'{"method":"org.varlink.service.GetInfo","parameters":null}\0')
        self.assertEqual(c.recv(), reply)

    def test_get_info_rejects_parameters(self):
        c = self.conn()
        self.assertError(c.call(STD + "GetInfo", {"x": 1}), STD + "InvalidParameter", {"parameter": "x"})
        self.assertAlive(c)

    def test_interface_description_is_the_file(self):
        c = self.conn()
        r = c.call(STD + "GetInterfaceDescription", {"interface": "io.halyard.Test"})
        self.assertEqual(set(r), {"parameters"})
        self.assertEqual(r["parameters"], {"description": harness.TEST_IDL.read_text()})
        r = c.call(STD + "GetInterfaceDescription", {"interface": "org.varlink.service"})
        d = r["parameters"]["description"]
        self.assertRegex(d, r"(?m)^interface org\.varlink\.service$")
        for e in ("InterfaceNotFound", "MethodNotFound", "MethodNotImplemented", "InvalidParameter",
                  "PermissionDenied", "ExpectedMore"):
            self.assertRegex(d, r"(?m)^error %s \(" % e)

    # -- standard errors

    def test_interface_not_found(self):
        c = self.conn()
        self.assertError(c.call(STD + "GetInterfaceDescription", {"interface": "io.halyard.Nope"}),
                         STD + "InterfaceNotFound", {"interface": "io.halyard.Nope"})
        self.assertError(c.call("io.halyard.Nope.Method", {}), STD + "InterfaceNotFound",
                         {"interface": "io.halyard.Nope"})
        self.assertAlive(c)

    def test_method_not_found(self):
        c = self.conn()
        self.assertError(c.call(T + "NoSuchMethod", {}), STD + "MethodNotFound", {"method": T + "NoSuchMethod"})
        self.assertError(c.call(STD + "Nope", {}), STD + "MethodNotFound", {"method": STD + "Nope"})
        self.assertError(c.call("NoDots", {}), STD + "MethodNotFound", {"method": "NoDots"})
        self.assertAlive(c)

    def test_invalid_parameter_names_the_parameter(self):
        c = self.conn()
        cases = [
            ("missing", T + "Echo", {}, "text"),
            ("null", T + "Echo", {"text": None}, "text"),
            ("wrong type", T + "Echo", {"text": 5}, "text"),
            ("wrong type int", T + "Sleep", {"ms": "10"}, "ms"),
            ("unknown field", T + "Echo", {"text": "a", "bogus": 1}, "bogus"),
            ("unknown field on ()", T + "Ping", {"extra": True}, "extra"),
            ("missing one of two", T + "Log", {"queueId": "Q1"}, "message"),
            ("handler check", T + "Stream", {"count": 0}, "count"),
        ]
        for name, method, params, parameter in cases:
            with self.subTest(name):
                self.assertError(c.call(method, params, more=True) if method.endswith("Stream") else
                                 c.call(method, params), STD + "InvalidParameter", {"parameter": parameter})
        self.assertAlive(c)

    def test_method_not_implemented_for_upgrade(self):
        c = self.conn()
        self.assertError(c.call(T + "Ping", {}, upgrade=True), STD + "MethodNotImplemented", {"method": T + "Ping"})
        self.assertAlive(c)

    def test_expected_more(self):
        c = self.conn()
        self.assertError(c.call(T + "Stream", {"count": 3}), STD + "ExpectedMore")
        self.assertIn(c.call(T + "Stream", {"count": 3}, more=False)["error"], STD + "ExpectedMore")
        self.assertAlive(c)

    # -- more, oneway, pipelining

    def test_more_streams_with_continues(self):
        c = self.conn()
        c.send(T + "Stream", {"count": 5}, more=True)
        c.send(T + "Echo", {"text": "after the stream"})
        replies = [c.recv() for _ in range(6)]
        for i in range(4):
            self.assertEqual(replies[i], {"parameters": {"index": i}, "continues": True})
        self.assertEqual(replies[4], {"parameters": {"index": 4}})
        self.assertEqual(replies[5], {"parameters": {"text": "after the stream"}})

    def test_more_on_a_single_reply_method(self):
        c = self.conn()
        self.assertEqual(c.call(T + "Echo", {"text": "x"}, more=True), {"parameters": {"text": "x"}})

    def test_oneway_gets_no_reply(self):
        c = self.conn()
        c.send(T + "Echo", {"text": "oneway"}, oneway=True)
        c.send(T + "NoSuchMethod", {}, oneway=True)  # errors are not sent either
        c.send(T + "Echo", {}, oneway=True)
        c.send(T + "Echo", {"text": "next"})
        self.assertEqual(c.recv(), {"parameters": {"text": "next"}})
        self.assertTrue(c.nothing_pending(0.2), c.buf)
        self.assertAlive(c)

    def test_oneway_with_more_is_a_protocol_error(self):
        c = self.conn()
        c.send(T + "Echo", {"text": "x"}, oneway=True, more=True)
        c.wait_eof()

    def test_100_pipelined_calls_in_one_send(self):
        c = self.conn()
        data = b"".join(VarlinkConn.encode(T + "Echo", {"text": "call-%d" % i}) for i in range(100))
        c.send_raw(data)
        for i in range(100):
            self.assertEqual(c.recv(), {"parameters": {"text": "call-%d" % i}})
        self.assertTrue(c.nothing_pending(0.05))

    def test_pipelined_behind_a_slow_call(self):
        c = self.conn()
        c.send_raw(VarlinkConn.encode(T + "Sleep", {"ms": 200}) + VarlinkConn.encode(T + "Echo", {"text": "2nd"}))
        self.assertEqual(c.recv(), {"parameters": {}})
        self.assertEqual(c.recv(), {"parameters": {"text": "2nd"}})

    def test_one_byte_sends(self):
        c = self.conn()
        data = VarlinkConn.encode(T + "Echo", {"text": "slow ☃"}) + VarlinkConn.encode(T + "Ping", {})
        for i in range(len(data)):
            c.sock.send(data[i:i + 1])
        self.assertEqual(c.recv(), {"parameters": {"text": "slow ☃"}})
        self.assertEqual(c.recv(), {"parameters": {}})

    def test_bad_input_closes_the_connection(self):
        cases = {
            "truncated json": b'{"method":\0',
            "not an object": b'[1,2,3]\0',
            "a string": b'"io.halyard.Test.Ping"\0',
            "trailing garbage": b'{"method":"io.halyard.Test.Ping"} x\0',
            "no method": b'{"parameters":{}}\0',
            "method not a string": b'{"method":5}\0',
            "parameters not an object": b'{"method":"io.halyard.Test.Ping","parameters":[]}\0',
            "oneway not a bool": b'{"method":"io.halyard.Test.Ping","oneway":"yes"}\0',
        }
        for name, data in cases.items():
            with self.subTest(name):
                with self.testd.connect() as c:
                    c.send_raw(data)
                    c.wait_eof()
        # The server itself is fine.
        self.assertAlive(self.conn())

    def test_invalid_utf8_is_not_echoed(self):
        # Varlink messages are UTF-8 JSON (RFC 8259 8.1). A call carrying
        # invalid UTF-8 may be refused (error reply or hang-up), but the
        # server must never send invalid UTF-8 itself: strict peers (sd-json)
        # drop the connection on such a reply.
        cases = {
            "lone continuation bytes": b"\xff\xfe",
            "truncated sequence": b"ab\xe2\x98",
            "overlong slash": b"\xc0\xaf",
            "surrogate": b"\xed\xa0\x80",
        }
        for name, bad in cases.items():
            with self.subTest(name):
                with self.testd.connect() as c:
                    c.send_raw(b'{"method":"io.halyard.Test.Echo","parameters":{"text":"' + bad + b'"}}\0')
                    raw = c.recv_raw()
                    if raw is not None:
                        try:
                            raw.decode("utf-8")
                        except UnicodeDecodeError:
                            self.fail("reply is not UTF-8: %r" % raw)

    def test_half_closed_socket_gets_its_replies(self):
        c = self.conn()
        c.send_raw(VarlinkConn.encode(T + "Echo", {"text": "a"}) + VarlinkConn.encode(T + "Sleep", {"ms": 100}) +
                   VarlinkConn.encode(T + "Stream", {"count": 2}, more=True) + VarlinkConn.encode(T + "Echo", {"text": "b"}))
        c.shutdown_write()
        self.assertEqual(c.recv(), {"parameters": {"text": "a"}})
        self.assertEqual(c.recv(), {"parameters": {}})
        self.assertEqual(c.recv(), {"parameters": {"index": 0}, "continues": True})
        self.assertEqual(c.recv(), {"parameters": {"index": 1}})
        self.assertEqual(c.recv(), {"parameters": {"text": "b"}})
        c.wait_eof()

    # -- fd passing

    def test_fd_passing(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        content = "".join(chr(ord("A") + i % 26) for i in range(300))
        f = tmp.write("payload", content)
        c = self.conn()
        with open(f, "rb") as fh:
            r = c.call(T + "ReadFd", {"fd": 0}, fds=[fh.fileno()])
        self.assertEqual(r, {"parameters": {"size": 300, "head": content[:64]}})

    def test_fd_passing_pipelined_keeps_fds_with_their_message(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        files = [tmp.write("f%d" % i, "file %d " % i * (i + 1)) for i in range(3)]
        c = self.conn()
        handles = [open(f, "rb") for f in files]
        self.addCleanup(lambda: [h.close() for h in handles])
        for h in handles:
            c.send(T + "ReadFd", {"fd": 0}, fds=[h.fileno()])
        c.send(T + "Ping", {})
        for i, f in enumerate(files):
            text = f.read_text()
            self.assertEqual(c.recv(), {"parameters": {"size": len(text), "head": text[:64]}})
        self.assertEqual(c.recv(), {"parameters": {}})

    def test_fd_passing_errors(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        f = tmp.write("x", "x")
        c = self.conn()
        rfd, wfd = os.pipe()
        self.addCleanup(os.close, rfd)
        self.addCleanup(os.close, wfd)
        with self.subTest("not a regular file"):
            self.assertError(c.call(T + "ReadFd", {"fd": 0}, fds=[rfd]), T + "Failed",
                             {"reason": "not a regular file"})
        with self.subTest("no fd sent"):
            self.assertError(c.call(T + "ReadFd", {"fd": 0}), STD + "InvalidParameter", {"parameter": "fd"})
        with open(f, "rb") as fh:
            with self.subTest("index out of range"):
                self.assertError(c.call(T + "ReadFd", {"fd": 1}, fds=[fh.fileno()]), STD + "InvalidParameter",
                                 {"parameter": "fd"})
            with self.subTest("method that takes no fds"):
                self.assertError(c.call(T + "Echo", {"text": "x"}, fds=[fh.fileno()]), STD + "InvalidParameter",
                                 {"parameter": "fileDescriptors"})
            with self.subTest("GetInfo takes no fds"):
                self.assertError(c.call(STD + "GetInfo", {}, fds=[fh.fileno()]), STD + "InvalidParameter",
                                 {"parameter": "fileDescriptors"})
        self.assertAlive(c)

    def test_read_fd_head_is_valid_utf8(self):
        # "its first 64 bytes" as a string: 64 bytes of "☃☃…" (3 bytes
        # each) end in the middle of a character. The reply must still be
        # UTF-8 JSON (RFC 8259 8.1), or strict clients drop the connection.
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        f = tmp.write("snowmen", "\u2603" * 30)
        c = self.conn()
        with open(f, "rb") as fh:
            c.send(T + "ReadFd", {"fd": 0}, fds=[fh.fileno()])
        raw = c.recv_raw()
        self.assertIsNotNone(raw)
        try:
            reply = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            self.fail("ReadFd reply is not UTF-8: %r" % raw[-40:])
        self.assertEqual(reply["parameters"]["size"], 90)

    # -- deferred replies

    def test_oneway_deferred_reply_does_not_answer_the_next_call(self):
        # Sleep answers later from a timer. Sent oneway, its late answer must
        # go nowhere; it must not be taken as the reply to the call being
        # handled at that moment on the same connection.
        c = self.conn()
        t0 = time.monotonic()
        c.send(T + "Sleep", {"ms": 100}, oneway=True)
        c.send(T + "Sleep", {"ms": 1500})
        c.send(T + "Echo", {"text": "third"})
        first = c.recv(timeout=5)
        t_first = time.monotonic() - t0
        self.assertEqual(first, {"parameters": {}})
        self.assertGreaterEqual(t_first, 1.4, "Sleep(1500) answered after %.2f s: the oneway Sleep(100)'s "
                                "late reply was sent as its reply" % t_first)
        self.assertEqual(c.recv(timeout=5), {"parameters": {"text": "third"}})

    def test_client_gone_while_a_reply_is_pending(self):
        with self.testd.connect() as c:
            c.send(T + "Sleep", {"ms": 50})
        with self.testd.connect() as c:
            c.send(T + "Sleep", {"ms": 50})
            c.send(T + "Stream", {"count": 1000}, more=True)
        # The server outlives the timers that fire for closed connections.
        with self.testd.connect() as c:
            wait_until(lambda: c.call(T + "GetStatus", {})["parameters"]["connections"] == 1, 5, 0.05,
                       "the closed connections to be gone")
            # A timer armed after theirs with the same length fires after
            # them: once it answers, theirs have fired too.
            self.assertEqual(c.call(T + "Sleep", {"ms": 60}), {"parameters": {}})
            self.assertAlive(c)
        self.assertIsNone(self.testd.proc.poll())

    # -- concurrency

    def test_sleep_does_not_block_other_connections(self):
        a, b = self.conn(), self.conn()
        t0 = time.monotonic()
        a.send(T + "Sleep", {"ms": 500})
        self.assertEqual(b.call(T + "Echo", {"text": "fast"}), {"parameters": {"text": "fast"}})
        t_echo = time.monotonic() - t0
        self.assertTrue(a.nothing_pending(0), "Sleep(500) answered before Echo on another connection")
        self.assertLess(t_echo, 0.45, "Echo on another connection waited for Sleep")
        self.assertEqual(a.recv(timeout=5), {"parameters": {}})
        self.assertGreaterEqual(time.monotonic() - t0, 0.49)

    def test_200_connections_pipelining_100_pings(self):
        n_conns, n_calls = 200, 100
        payload = VarlinkConn.encode(T + "Ping", {}) * n_calls
        expected = b'{"parameters":{}}'
        sel = selectors.DefaultSelector()
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        self.addCleanup(sel.close)
        t0 = time.monotonic()
        deadline = t0 + 60
        for i in range(n_conns):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(str(self.testd.socket))
            socks.append(s)
        counts = {}
        bufs = {}
        for s in socks:
            s.sendall(payload)
            s.setblocking(False)
            counts[s] = 0
            bufs[s] = b""
            sel.register(s, selectors.EVENT_READ)
        total, bad = 0, []
        while total < n_conns * n_calls:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "only %d of %d replies within 60 s" % (total, n_conns * n_calls))
            for key, _ in sel.select(timeout=min(left, 1.0)):
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    sel.unregister(s)
                    self.fail("connection closed after %d replies" % counts[s])
                msgs = (bufs[s] + data).split(b"\0")
                bufs[s] = msgs.pop()
                for m in msgs:
                    if m != expected:
                        bad.append(m)
                    counts[s] += 1
                    total += 1
        self.assertEqual(bad, [])
        self.assertEqual(set(counts.values()), {n_calls})
        self.assertEqual(total, n_conns * n_calls)
        sys.stderr.write("[%d replies in %.2f s] " % (total, time.monotonic() - t0))


class Limits(harness.TestCase):
    def test_message_too_large(self):
        t = self.start_testd(config="[Test]\nMessageMax=4K\n")
        # Under the limit: fine.
        with t.connect() as c:
            text = "y" * 3000
            self.assertEqual(c.call(T + "Echo", {"text": text}), {"parameters": {"text": text}})
        # Over it: an error saying so, then EOF.
        with t.connect() as c:
            c.send(T + "Echo", {"text": "x" * 5000})
            r = c.recv()
            self.assertEqual(r.get("error"), "io.halyard.Varlink.MessageTooLarge", r)
            self.assertEqual(r.get("parameters"), {"limit": 4096})
            c.wait_eof()
        # A message that never ends is cut off once it passes the limit.
        with t.connect() as c:
            c.send_raw(b'{"method":"io.halyard.Test.Echo","parameters":{"text":"' + b"z" * 8000)
            r = c.recv()
            self.assertEqual(r.get("error"), "io.halyard.Varlink.MessageTooLarge", r)
            c.wait_eof()
        # Other connections are unaffected.
        self.assertEqual(t.status()["greeting"], "hello")

    def test_out_of_fds(self):
        # Out of file descriptors the server stops accepting for a moment
        # instead of spinning on the readable listening socket, keeps its
        # connections, and accepts again once fds are free.
        t = self.start_testd(activate=False, fd_limit=32)
        clients = []
        try:
            for _ in range(60):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(t.socket))
                clients.append(s)
            time.sleep(0.5)
            def cpu():
                f = open("/proc/%d/stat" % t.pid).read().rsplit(")", 1)[1].split()
                return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            before = cpu()
            time.sleep(2)
            self.assertLess(cpu() - before, 0.5, "the server spins while out of fds")
            # An accepted connection is served.
            clients[0].sendall(json.dumps({"method": "org.varlink.service.GetInfo", "parameters": {}}).encode() + b"\0")
            clients[0].settimeout(5)
            self.assertIn(b'"vendor"', clients[0].recv(65536))
        finally:
            for s in clients:
                s.close()
        wait_until(lambda: t.status()["greeting"] == "hello", 10, what="a call once fds are free")

    def test_reply_too_large(self):
        # A reply over MessageMax cannot be sent: the caller gets
        # io.halyard.Varlink.MessageTooLarge instead, and the connection goes
        # on, whether the method is a handler (GetStatus with a long greeting)
        # or built in (GetInterfaceDescription of the ~1.6 KiB Test IDL).
        t = self.start_testd(config="[Test]\nMessageMax=1K\nGreeting=%s\n" % ("g" * 1200))
        for method, params in [(T + "GetStatus", {}),
                               ("org.varlink.service.GetInterfaceDescription", {"interface": "io.halyard.Test"})]:
            with self.subTest(method):
                with t.connect() as c:
                    c.send(method, params)
                    r = c.recv()
                    self.assertIsNotNone(r, "EOF instead of an error reply")
                    self.assertEqual(r.get("error"), "io.halyard.Varlink.MessageTooLarge", r)
                    self.assertEqual(c.call(T + "Echo", {"text": "next"}), {"parameters": {"text": "next"}})

    def test_long_stream_with_a_small_message_max(self):
        # MessageMax limits one message, not a whole "more" stream: a client
        # that reads as fast as it can gets all of Stream(100000) (the
        # largest count the IDL's implementation allows).
        t = self.start_testd(config="[Test]\nMessageMax=4K\n")
        c = self.connect(t)
        c.send(T + "Stream", {"count": 100000}, more=True)
        n = 0
        while True:
            r = c.recv(timeout=20)
            self.assertIsNotNone(r, "EOF after %d of 100000 replies" % n)
            self.assertEqual(r["parameters"]["index"], n)
            n += 1
            if not r.get("continues"):
                break
        self.assertEqual(n, 100000)

    def test_max_connections(self):
        t = self.start_testd(config="[Test]\nMaxConnections=5\n")
        # First let testd notice that the start-up probes have gone.
        first = self.connect(t)
        wait_until(lambda: first.call(T + "GetStatus", {})["parameters"]["connections"] == 1, 5, 0.02,
                   "testd to be left with one connection")
        conns = [first] + [self.connect(t) for _ in range(4)]
        for i, c in enumerate(conns):
            self.assertEqual(c.call(T + "Echo", {"text": str(i)}), {"parameters": {"text": str(i)}})
        sixth = self.connect(t)
        try:
            sixth.send(T + "Ping", {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server before we got to write
        sixth.wait_eof()
        for i, c in enumerate(conns):
            self.assertEqual(c.call(T + "Echo", {"text": str(i)}), {"parameters": {"text": str(i)}})
        self.assertEqual(conns[0].call(T + "GetStatus", {})["parameters"]["connections"], 5)
        # A slot freed is a slot a new client gets (the server notices the
        # close asynchronously: retry until it has).
        conns.pop().close()

        def seventh_works():
            with t.connect() as c:
                c.send(T + "Ping", {})
                return c.recv() == {"parameters": {}}
        wait_until(seventh_works, 5, 0.05, "a connection slot to be free again")


class Configuration(harness.TestCase):
    def run_check(self, text, via_env=False):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        conf = tmp.write("check.conf", text)
        env = dict(os.environ)
        argv = [str(harness.TESTD), "--check"]
        if via_env:
            env["HALYARD_CONFIG"] = str(conf)
        else:
            env.pop("HALYARD_CONFIG", None)
            argv.append("--config=%s" % conf)
        p = subprocess.run(argv, env=env, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        return p.returncode, p.stderr.decode(), str(conf)

    def test_check_bad_config(self):
        for via_env in (False, True):
            with self.subTest(via_env=via_env):
                rc, err, path = self.run_check("[Test]\nGreeting=x\nMessageMax=10X\n", via_env)
                self.assertEqual(rc, 1, err)
                self.assertRegex(err, r"(?m)^%s:3: error: " % re.escape(path))
        for name, text, line in [("bad uint", "[Test]\nMaxConnections=-1\n", 2),
                                 ("bad duration", "\n[Test]\nDrainTimeout=soon\n", 3),
                                 ("bad syntax", "[Test\n", 1)]:
            with self.subTest(name):
                rc, err, path = self.run_check(text)
                self.assertEqual(rc, 1, err)
                self.assertRegex(err, r"(?m)^%s:%d: error: " % (re.escape(path), line))

    def test_check_good_config(self):
        rc, err, _ = self.run_check("[Test]\nGreeting=hi there\nMaxConnections=10\nMessageMax=1M\n"
                                    "DrainTimeout=5s\n")
        self.assertEqual((rc, err), (0, ""))
        rc, err, _ = self.run_check("")
        self.assertEqual((rc, err), (0, ""))

    def test_check_unknown_key_is_a_warning(self):
        rc, err, path = self.run_check("[Test]\nBogus=1\n")
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, r"(?m)^%s:2: warning: " % re.escape(path))

    def test_refuses_to_start_with_a_bad_config(self):
        t = harness.Testd(config="[Test]\nMessageMax=10X\n", activate=False)
        self.addCleanup(t.stop)
        with self.assertRaises(RuntimeError):
            t.start(timeout=5)
        self.assertEqual(t.proc.returncode, 1)
        self.assertRegex(t.stderr(), r"(?m)^%s:2: error: " % re.escape(str(t.config)))

    def test_sighup_applies_a_valid_config(self):
        t = self.start_testd(config="[Test]\nGreeting=first\n")
        c = self.connect(t)
        self.assertEqual(c.call(T + "GetStatus", {})["parameters"]["greeting"], "first")
        t.write_config("[Test]\nGreeting=second\n")
        t.signal(signal.SIGHUP)
        wait_until(lambda: t.status()["greeting"] == "second", 5, 0.02, "the new greeting")
        # The connection that was open during the reload still works.
        self.assertEqual(c.call(T + "GetStatus", {})["parameters"]["greeting"], "second")
        t.wait_stderr("Configuration reloaded")

    def test_sighup_refuses_a_broken_config(self):
        t = self.start_testd(config="[Test]\nGreeting=kept\n")
        c = self.connect(t)
        t.write_config("[Test]\nGreeting=lost\nMessageMax=10X\n")
        t.signal(signal.SIGHUP)
        t.wait_stderr(re.compile(r"(?m)^%s:3: error: " % re.escape(str(t.config))), 5)
        t.wait_stderr("reload refused", 5)
        self.assertEqual(t.status()["greeting"], "kept")
        self.assertEqual(c.call(T + "Echo", {"text": "ok"}), {"parameters": {"text": "ok"}})
        self.assertIsNone(t.proc.poll())
        # And a later good config is applied.
        t.write_config("[Test]\nGreeting=fixed\n")
        t.signal(signal.SIGHUP)
        wait_until(lambda: t.status()["greeting"] == "fixed", 5, 0.02, "the fixed greeting")

    def test_sighup_applies_new_limits(self):
        t = self.start_testd(config="[Test]\nMessageMax=1M\n")
        with t.connect() as c:
            self.assertEqual(c.call(T + "Echo", {"text": "x" * 6000})["parameters"]["text"], "x" * 6000)
        t.write_config("[Test]\nMessageMax=4K\n")
        t.signal(signal.SIGHUP)
        t.wait_stderr("Configuration reloaded")
        with t.connect() as c:
            c.send(T + "Echo", {"text": "x" * 6000})
            self.assertEqual(c.recv().get("error"), "io.halyard.Varlink.MessageTooLarge")
            c.wait_eof()


class Credentials(harness.TestCase):
    def test_secret_loaded(self):
        t = self.start_testd(secret="s3cr3t\n")
        self.assertIs(t.status()["secretLoaded"], True)

    def test_no_credentials(self):
        t = self.start_testd()
        self.assertIs(t.status()["secretLoaded"], False)

    def test_credentials_dir_without_the_secret(self):
        t = harness.Testd(secret="x")
        self.addCleanup(t.stop)
        os.unlink(t.creds / "test-secret")
        t.start()
        self.assertIs(t.status()["secretLoaded"], False)


class Drain(harness.TestCase):
    def test_sigterm_finishes_calls_in_flight(self):
        t = self.start_testd()
        a, b = self.connect(t), self.connect(t)
        # Pipelined Ping + Sleep: once Ping is answered, Sleep is dispatched.
        a.send_raw(VarlinkConn.encode(T + "Ping", {}) + VarlinkConn.encode(T + "Sleep", {"ms": 1000}))
        self.assertEqual(a.recv(), {"parameters": {}})
        t_sleep = time.monotonic()
        t.signal(signal.SIGTERM)
        # Open connections keep being served and see the drain...
        wait_until(lambda: b.call(T + "GetStatus", {})["parameters"]["draining"], 2, 0.02, "draining=true")
        # ...while new connections are refused.

        def refused():
            try:
                with t.connect(timeout=1):
                    return False
            except ConnectionRefusedError:
                return True
        wait_until(refused, 2, 0.02, "new connections to be refused")
        self.assertTrue(a.nothing_pending(0), "too slow: Sleep ended before the checks")
        self.assertIsNone(t.proc.poll(), "exited with a call in flight")
        self.assertEqual(a.recv(timeout=5), {"parameters": {}})
        self.assertGreaterEqual(time.monotonic() - t_sleep, 0.9)
        a.close()
        # b is still open: testd waits for it.
        self.assertEqual(b.call(T + "Ping", {}), {"parameters": {}})
        self.assertIsNone(t.proc.poll())
        b.close()
        self.assertEqual(t.wait_exit(5), 0)
        self.assertIn("Draining: 2 connections open", t.stderr())

    def test_sigterm_when_idle_exits_at_once(self):
        t = self.start_testd()
        t0 = time.monotonic()
        t.signal(signal.SIGTERM)
        self.assertEqual(t.wait_exit(5), 0)
        self.assertLess(time.monotonic() - t0, 2)

    def test_drain_timeout(self):
        t = self.start_testd(config="[Test]\nDrainTimeout=1s\n")
        c = self.connect(t)
        self.assertEqual(c.call(T + "Ping", {}), {"parameters": {}})
        t0 = time.monotonic()
        t.signal(signal.SIGTERM)
        self.assertEqual(t.wait_exit(6), 0)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertIn("Drain timeout", t.stderr())
        c.wait_eof()


class Logging(harness.TestCase):
    def test_stderr_lines_have_priority_prefixes(self):
        t = self.start_testd()
        with t.connect() as c:
            self.assertEqual(c.call(T + "Log", {"queueId": "ABC123", "message": "hello\nworld"}),
                             {"parameters": {}})
        t.wait_stderr("ABC123")
        t.signal(signal.SIGTERM)
        self.assertEqual(t.wait_exit(5), 0)
        lines = t.testd_stderr_lines()
        self.assertGreaterEqual(len(lines), 3, lines)
        for l in lines:
            self.assertRegex(l, r"^<[0-7]>\S", "a stderr line without <N> prefix")
        text = "\n".join(lines)
        self.assertRegex(text, r"(?m)^<6>halyard-testd .* serving io\.halyard\.Test$")
        self.assertRegex(text, r"(?m)^<6>ABC123: hello\\x0aworld$")
        self.assertRegex(text, r"(?m)^<[0-7]>.*SIGTERM")
        self.assertRegex(text, r"(?m)^<6>halyard-testd stopped$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
