#!/usr/bin/python3
"""halyard-queued's intake and management, against the real binary under
systemd-socket-activate: Enqueue with the content passed as a file
descriptor, durability across kill -9, List/Show/Hold/Release/Delete/Retry,
Monitor events, GetStatus, halyardctl queue verbs, and bad input."""

import os
import random
import signal
import subprocess
import threading
import time
import unittest

import harness
from harness import BUILD_ROOT, VarlinkConn, halyardctl, wait_until

QUEUED = BUILD_ROOT / "services" / "queued" / "halyard-queued"


# Delivery attempts go to a closed port on loopback: messages stay queued
# (deferred) and nothing ever leaves the machine, DNS included.
LOCAL_ONLY = "[Queue]\nRelayhost=[127.0.0.1]:9\nRetrySchedule=1h\n"


class Queued:
    """One halyard-queued with its own spool, socket and config."""

    def __init__(self, tmp, config=LOCAL_ONLY):
        self.tmp = tmp
        self.socket = tmp / "io.halyard.Queue"
        self.spool = tmp / "spool"
        self.spool.mkdir(exist_ok=True)
        self.config = tmp / "halyard.conf"
        self.config.write_text(config)
        self.proc = None

    def start(self):
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
            env.pop(k, None)
        argv = [harness.SOCKET_ACTIVATE, "-l", str(self.socket), "--fdname=varlink",
                "-E", "HALYARD_CONFIG=%s" % self.config, str(QUEUED), "--spool=%s" % self.spool]
        self.stderr = open(self.tmp / "queued.stderr", "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, env=env, start_new_session=True)
        harness._live_processes.append(self.proc)
        wait_until(lambda: self.proc.poll() is not None or harness.connectable(self.socket), 10,
                   what="queued socket")
        # The first connection turns systemd-socket-activate into queued.
        wait_until(lambda: self.proc.poll() is not None or os.readlink("/proc/%d/exe" % self.proc.pid) == str(QUEUED),
                   10, what="queued exec")
        if self.proc.poll() is not None:
            self.stderr.flush()
            raise RuntimeError("queued exited with %s at start:\n%s" % (self.proc.returncode, self.log()[-4000:]))
        return self

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.stderr.close()

    def log(self):
        return (self.tmp / "queued.stderr").read_text(errors="replace")

    def conn(self):
        return VarlinkConn(str(self.socket))


def content_fd(data):
    fd = os.memfd_create("msg")
    os.write(fd, data)
    return fd


def enqueue(conn, data, sender="alice@example.org", rcpts=("bob@example.net",), **extra):
    fd = content_fd(data)
    try:
        params = {"sender": sender, "recipients": [{"address": r} for r in rcpts], "content": 0}
        params.update(extra)
        return conn.call("io.halyard.Queue.Enqueue", params, fds=[fd])
    finally:
        os.close(fd)


MESSAGE = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nhello\r\n"


class QueueTest(unittest.TestCase):
    def setUp(self):
        self.tmp = harness.TempDir()
        self.q = Queued(self.tmp).start()

    def tearDown(self):
        if self.q.proc.poll() is None:
            self.q.kill()
        self.tmp.cleanup()

    def list_ids(self, conn, **filters):
        conn.send("io.halyard.Queue.List", filters, more=True)
        ids = []
        while True:
            r = conn.recv()
            self.assertNotIn("error", r, r)
            if "message" in r["parameters"]:
                ids.append(r["parameters"]["message"]["queueId"])
            if not r.get("continues"):
                return ids

    def test_enqueue_is_stored_and_listed(self):
        with self.q.conn() as c:
            r = enqueue(c, MESSAGE, rcpts=("bob@example.net", "carol@example.com"),
                        envid="ENV1", ret="headers", client={"address": "192.0.2.7", "helo": "client.example"})
            self.assertNotIn("error", r, r)
            qid = r["parameters"]["queueId"]
            self.assertRegex(qid, r"^[0-9A-Z]+$")
            show = c.call("io.halyard.Queue.Show", {"queueId": qid})["parameters"]["message"]
            self.assertEqual(show["sender"], "alice@example.org")
            self.assertEqual(show["size"], len(MESSAGE))
            self.assertEqual([x["address"] for x in show["recipients"]], ["bob@example.net", "carol@example.com"])
            self.assertTrue(all(x["state"] == "pending" for x in show["recipients"]))
            self.assertIn(show["state"], ("active", "deferred"))
            self.assertEqual(self.list_ids(c), [qid])
            self.assertEqual(self.list_ids(c, domain="example.com"), [qid])
            self.assertEqual(self.list_ids(c, domain="example.invalid"), [])
            st = c.call("io.halyard.Queue.GetStatus")["parameters"]
            self.assertEqual(st["active"] + st["deferred"], 1)
            self.assertGreaterEqual(st["spoolCommitted"], 1)
        # The content is in the spool byte for byte.
        found = [p for p in self.q.spool.rglob("*") if p.is_file() and p.read_bytes() == MESSAGE]
        self.assertEqual(len(found), 1, list(self.q.spool.rglob("*")))

    def test_ids_unique_and_ordered(self):
        with self.q.conn() as c:
            ids = [enqueue(c, MESSAGE)["parameters"]["queueId"] for _ in range(20)]
        self.assertEqual(len(set(ids)), 20)
        self.assertEqual(ids, sorted(ids))

    def test_bad_input(self):
        with self.q.conn() as c:
            for sender, rcpts, bad in (("a b@x", ["ok@x"], "sender"), ("a@x", [], "recipients"),
                                       ("a@x", ["<evil@x>"], "recipients"), ("a@x", ["x\r\nRCPT TO:<y@z>"], "recipients"),
                                       ("a@x", ["x" * 300 + "@y"], "recipients")):
                r = enqueue(c, MESSAGE, sender=sender, rcpts=rcpts)
                self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)
                self.assertEqual(r["parameters"]["parameter"], bad)
            # No fd at all.
            r = c.call("io.halyard.Queue.Enqueue", {"sender": "a@x", "recipients": [{"address": "b@y"}], "content": 0})
            self.assertEqual(r.get("error"), "org.varlink.service.InvalidParameter", r)
            r = c.call("io.halyard.Queue.Show", {"queueId": "NOPE"})
            self.assertEqual(r.get("error"), "io.halyard.Queue.NoSuchMessage")
            self.assertEqual(self.list_ids(c), [])

    def test_null_sender_accepted(self):
        with self.q.conn() as c:
            r = enqueue(c, MESSAGE, sender="")
            self.assertNotIn("error", r, r)

    def test_size_limit(self):
        self.q.kill()
        self.q = Queued(self.tmp, config=LOCAL_ONLY + "MaxMessageSize=1K\n").start()
        with self.q.conn() as c:
            r = enqueue(c, b"x" * 2048)
            self.assertEqual(r.get("error"), "io.halyard.Queue.ContentTooLarge", r)
            self.assertEqual(r["parameters"]["limit"], 1024)
            self.assertNotIn("error", enqueue(c, b"y" * 1000))

    @staticmethod
    def next_event(mon):
        """The next Monitor event that is not about a delivery attempt."""
        while True:
            ev = mon.recv()
            if ev["parameters"]["event"] != "deferred":
                return ev

    def test_hold_release_delete_retry_and_monitor(self):
        mon = self.q.conn()
        mon.send("io.halyard.Queue.Monitor", {}, more=True)
        with self.q.conn() as c:
            qid = enqueue(c, MESSAGE)["parameters"]["queueId"]
            ev = self.next_event(mon)
            self.assertEqual((ev["parameters"]["event"], ev["parameters"]["queueId"]), ("accepted", qid))
            self.assertTrue(ev.get("continues"))
            self.assertNotIn("error", c.call("io.halyard.Queue.Hold", {"queueId": qid}))
            self.assertEqual(self.next_event(mon)["parameters"]["event"], "held")
            self.assertEqual(self.list_ids(c, state="held"), [qid])
            r = c.call("io.halyard.Queue.Retry", {"queueId": qid})["parameters"]
            self.assertEqual(r["count"], 0)  # held messages wait for Release
            self.assertNotIn("error", c.call("io.halyard.Queue.Release", {"queueId": qid}))
            self.assertEqual(self.next_event(mon)["parameters"]["event"], "released")
            self.assertEqual(self.list_ids(c, state="held"), [])
            r = c.call("io.halyard.Queue.Retry", {"domain": "example.net"})["parameters"]
            self.assertEqual(r["count"], 1)
            self.assertNotIn("error", c.call("io.halyard.Queue.Delete", {"queueId": qid}))
            self.assertEqual(self.next_event(mon)["parameters"]["event"], "deleted")
            self.assertEqual(self.list_ids(c), [])
            self.assertEqual(c.call("io.halyard.Queue.Show", {"queueId": qid}).get("error"),
                             "io.halyard.Queue.NoSuchMessage")
        mon.close()
        # Held state survives a restart.
        with self.q.conn() as c:
            qid = enqueue(c, MESSAGE)["parameters"]["queueId"]
            c.call("io.halyard.Queue.Hold", {"queueId": qid})
        self.q.kill(signal.SIGTERM)
        self.q.start()
        with self.q.conn() as c:
            self.assertEqual(self.list_ids(c, state="held"), [qid])

    def test_halyardctl_queue(self):
        with self.q.conn() as c:
            qid = enqueue(c, MESSAGE, rcpts=("bob@example.net",))["parameters"]["queueId"]
        rd = "--runtime-dir=%s" % self.tmp.path
        r = halyardctl(rd, "queue", "list")
        self.assertEqual(r.rc, 0, r)
        self.assertIn(qid, r.stdout)
        self.assertIn("<alice@example.org>", r.stdout)
        self.assertIn("bob@example.net (pending)", r.stdout)
        self.assertIn("-- 1 message", r.stdout)
        r = halyardctl(rd, "queue", "show", qid)
        self.assertEqual(r.rc, 0, r)
        self.assertRegex(r.stdout, r"bob@example.net \(pending, \d+ attempts\)")
        self.assertEqual(halyardctl(rd, "queue", "hold", qid).rc, 0)
        r = halyardctl(rd, "--state=held", "queue", "list")
        self.assertIn(qid, r.stdout)
        r = halyardctl(rd, "queue", "list", "--state=deferred")
        self.assertNotIn(qid, r.stdout)
        self.assertEqual(halyardctl(rd, "queue", "release", qid).rc, 0)
        r = halyardctl(rd, "queue", "retry", "--domain=example.net")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("1 message(s)", r.stdout)
        r = halyardctl(rd, "queue", "show", "NOSUCHID")
        self.assertEqual(r.rc, 1)
        self.assertIn("No such message: NOSUCHID", r.stderr)
        self.assertEqual(halyardctl(rd, "queue", "delete", qid).rc, 0)
        r = halyardctl(rd, "-j", "queue", "list")
        self.assertEqual(r.stdout.strip(), "[]")
        r = halyardctl(rd, "status")
        self.assertRegex(r.stdout, r"queued\s+running\s+0 active, 0 deferred, 0 held")

    def test_torn_files_quarantined_at_start(self):
        with self.q.conn() as c:
            qid = enqueue(c, MESSAGE)["parameters"]["queueId"]
        self.q.kill()
        # A foreign file and a torn one, where the spool keeps its messages
        # (msg/; a kill during an envelope update can leave the id in tmp/
        # too, which is emptied at start rather than quarantined).
        home = self.q.spool / "msg"
        self.assertTrue([p for p in home.iterdir() if qid in p.name])
        (home / "not-a-message").write_bytes(b"garbage")
        (home / "ZZZZZZZZ.env").write_bytes(b"{ torn")
        self.q.start()
        with self.q.conn() as c:
            self.assertEqual(self.list_ids(c), [qid])
        self.assertFalse((home / "not-a-message").exists())
        self.assertIn("quarantine", self.q.log())


def kill9_rounds(q, rounds, clients, rng, make_message, pause=(0.05, 0.4)):
    """Runs queued q for `rounds` rounds, each with `clients` threads
    enqueueing as fast as they can, and kill -9s it at a random moment.
    make_message(tag) -> (content bytes, value to remember). Returns
    {queueId: value} of every message whose Enqueue was answered."""
    acked = {}
    lock = threading.Lock()
    for rnd in range(rounds):
        q.start()
        stop = threading.Event()

        def client(n):
            try:
                with q.conn() as c:
                    i = 0
                    while not stop.is_set():
                        tag = "crash-%d-%d-%d" % (rnd, n, i)
                        body, value = make_message(tag)
                        r = enqueue(c, body, rcpts=("u@crash.test",))
                        if "error" not in r:
                            with lock:
                                acked[r["parameters"]["queueId"]] = value if value is not None else body
                        i += 1
            except (OSError, EOFError, ValueError, ConnectionError, TimeoutError):
                pass  # the server died under us: expected

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(*pause))
        q.kill()
        stop.set()
        for t in threads:
            t.join(10)
    return acked


class CrashTest(unittest.TestCase):
    """kill -9 at random moments under concurrent load: every message whose
    Enqueue was answered is there after the restart, intact."""

    ROUNDS = 12
    CLIENTS = 8

    def test_kill9_loses_nothing_acknowledged(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        q = Queued(tmp)
        acked = kill9_rounds(q, self.ROUNDS, self.CLIENTS, random.Random(4242), lambda tag: (
            ("From: x@example.org\r\nSubject: %s\r\n\r\n" % tag).encode() + os.urandom(64).hex().encode(), None))
        total_rounds = self.ROUNDS

        q.start()
        with q.conn() as c:
            c.send("io.halyard.Queue.List", {}, more=True)
            present = set()
            while True:
                r = c.recv()
                if "message" in r["parameters"]:
                    present.add(r["parameters"]["message"]["queueId"])
                if not r.get("continues"):
                    break
        q.kill()
        missing = set(acked) - present
        self.assertGreater(len(acked), 50, "too little load to prove anything")
        self.assertEqual(missing, set(), "acknowledged but lost: %s" % sorted(missing)[:10])
        # Byte for byte: the content files of acknowledged messages.
        contents = {p.read_bytes() for p in q.spool.rglob("*") if p.is_file()}
        damaged = [qid for qid, body in acked.items() if body not in contents]
        self.assertEqual(damaged, [])
        print("crash test: %d rounds, %d acknowledged messages, all present" % (total_rounds, len(acked)))


if __name__ == "__main__":
    unittest.main()
