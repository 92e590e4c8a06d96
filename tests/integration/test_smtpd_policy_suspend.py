#!/usr/bin/python3
"""A thousand sessions suspended at once (issue 5: the policy never blocks
the event loop). Each session's MAIL FROM runs a policy lookup, http() to a
local server that holds every request until the test releases them: all
thousand lookups are in flight together, a session that needs no lookup is
served meanwhile, and once released every suspended session gets its
answer.

halyard-smtpd runs with the soft fd limit at 1024, as systemd starts
services: it must raise its own limit to hold 1000 clients plus 1000 HTTP
requests."""

import asyncio
import resource
import threading
import time
import unittest

import harness
from test_queued import Queued
from test_smtpd import Smtpd

SESSIONS = 1000

POLICY = r'''
on mailfrom {
    if ($arguments["address"]["localpart"] == "wait") {
        $r = http("http://127.0.0.1:%d/wait?s=$1", [timeout => 90], [$connection["remoteport"]]);
        if (($r["status"] ?? 0) != 200)
            Defer("lookup failed: " . ($r["error"] ?? "status"), [code => 451, enhanced => [4, 3, 0]]);
    }
}
'''


class HeldHttp:
    """An asyncio HTTP/1.1 server on loopback that holds every request until
    release() (or 60 s); counts requests and how many are held."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.in_flight = self.max_in_flight = self.requests = 0
        ready = threading.Event()

        async def handle(reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await asyncio.wait_for(self.released.wait(), 60)
                except asyncio.TimeoutError:
                    pass
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\nok")
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async def start():
            self.released = asyncio.Event()
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=2048)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        ready.wait(10)

    def release(self):
        self.loop.call_soon_threadsafe(self.released.set)

    def stop(self):
        self.release()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def session(port, sender):
    """EHLO and MAIL FROM:<sender>; returns (seconds MAIL took, reply line)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()
        writer.write(b"EHLO client.test\r\n")
        while not (await reader.readline())[3:4] == b" ":
            pass
        t = time.monotonic()
        writer.write(b"MAIL FROM:<%s>\r\n" % sender)
        line = await reader.readline()
        took = time.monotonic() - t
        writer.write(b"QUIT\r\n")
        await reader.readline()
        return took, line.strip()
    finally:
        writer.close()


class SuspendedSessionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.http = HeldHttp()
        cls.q = Queued(cls.tmp).start()
        policy = cls.tmp / "suspend.hal"
        policy.write_text(POLICY % cls.http.port)
        config = ("[Smtpd]\nHostName=mx.halyard.test\nLocalDomains=example.org\nTimeout=180s\n"
                  "MaxConnections=3000\nMaxConnectionsPerAddress=3000\nPolicy=%s\nPolicyTimeout=120s\n" % policy)
        # The soft limit systemd gives services; the hard one stays high.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        try:
            cls.smtpd = Smtpd(cls.tmp, cls.q.socket, config, name="suspend").start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    @classmethod
    def tearDownClass(cls):
        cls.smtpd.stop()
        if cls.q.proc.poll() is None:
            cls.q.kill()
        cls.http.stop()
        cls.tmp.cleanup()

    def test_a_thousand_suspended_sessions(self):
        if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 3 * SESSIONS:
            self.skipTest("hard fd limit below %d" % (3 * SESSIONS))

        async def run():
            waiting = [asyncio.ensure_future(session(self.smtpd.port, b"wait@client.test"))
                       for _ in range(SESSIONS)]
            # Once they are all waiting on the lookup, one that needs none
            # is answered at once: the loop is free.
            deadline = time.monotonic() + 60
            while self.http.in_flight < SESSIONS and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            in_flight = self.http.in_flight
            quick = await session(self.smtpd.port, b"quick@client.test")
            answered_early = sum(f.done() for f in waiting)
            t = time.monotonic()
            self.http.release()
            results = await asyncio.gather(*waiting)
            return in_flight, quick, answered_early, results, time.monotonic() - t

        in_flight, quick, answered_early, results, rest = asyncio.run(run())
        self.assertEqual(in_flight, SESSIONS, "lookups in flight at once")
        self.assertEqual(answered_early, 0)
        self.assertEqual(quick[1], b"250 2.1.0 Ok")
        self.assertLess(quick[0], 2.0, "a session without a lookup waited for the others")
        self.assertEqual([line for _, line in results], [b"250 2.1.0 Ok"] * SESSIONS)
        self.assertEqual(self.http.requests, SESSIONS)
        self.assertLess(rest, 30, "%.1f s to answer %d sessions once released" % (rest, SESSIONS))
        self.assertIsNone(self.smtpd.proc.poll())
        self.assertNotIn("Too many open files", self.smtpd.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
