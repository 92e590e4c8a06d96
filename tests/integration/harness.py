# SPDX-License-Identifier: MIT
"""Helpers for halyard's integration tests: real binaries, real sockets.

- locate the built binaries (HALYARD_BUILD_ROOT, HALYARD_SOURCE_ROOT)
- start halyard-testd under systemd-socket-activate (Testd(activate=True))
  or directly with --listen (Testd(activate=False)), with a config file,
  an optional credentials directory and its stderr captured in a file
- a raw varlink client (VarlinkConn): JSON + NUL framing, pipelining,
  fd passing, partial writes, half-close, EOF detection
- run halyardctl and capture (rc, stdout, stderr)
- temp dirs that are removed, processes that are always killed, and waits
  that are bounded (wait_until) so a test can never hang.
"""

import atexit
import json
import os
import pathlib
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_ROOT = pathlib.Path(os.environ.get("HALYARD_SOURCE_ROOT") or HERE.parent.parent)


def _default_build_root():
    for name in ("build-integ", "build"):
        p = SOURCE_ROOT / name
        if (p / "build.ninja").exists():
            return p
    return SOURCE_ROOT / "build"


BUILD_ROOT = pathlib.Path(os.environ.get("HALYARD_BUILD_ROOT") or _default_build_root())
TESTD = BUILD_ROOT / "tests" / "testd" / "halyard-testd"
HALYARDCTL = BUILD_ROOT / "services" / "ctl" / "halyardctl"
TEST_IDL = SOURCE_ROOT / "tests" / "testd" / "io.halyard.Test.varlink"
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"

# Every bounded wait uses this unless told otherwise.
DEFAULT_TIMEOUT = 10.0


def project_version():
    text = (SOURCE_ROOT / "meson.build").read_text()
    m = re.search(r"version\s*:\s*'([^']+)'", text)
    return m.group(1) if m else None


def check_binaries(testcase=None):
    missing = [str(p) for p in (TESTD, HALYARDCTL) if not os.access(p, os.X_OK)]
    if missing:
        raise RuntimeError("not built (set HALYARD_BUILD_ROOT): " + ", ".join(missing))


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.01, what="condition"):
    """Polls predicate() until it returns something truthy; returns that.
    Raises AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class TempDir:
    """A short temp dir (socket paths must fit in sun_path's 108 bytes)."""

    def __init__(self, prefix="hyi-"):
        self.path = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))

    def __truediv__(self, other):
        return self.path / other

    def write(self, name, text, mode=0o644):
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, mode)
        return p

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


def listening(path):
    """True once a unix socket at path is in listen() — without connecting.
    The file exists from bind() on, so its existence alone races with the
    listen() that follows: a connect in between is refused."""
    want = str(path)
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode Path; Flags
                # 00010000 is __SO_ACCEPTCON, set by listen().
                if len(fields) >= 8 and fields[7] == want and int(fields[3], 16) & 0x10000:
                    return True
    except OSError:
        pass
    return False


def connectable(path):
    """True if something accepts connections on the unix socket path (the
    connection is closed at once)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---- raw varlink client ------------------------------------------------------


class VarlinkConn:
    """A raw varlink connection: what a minimal conforming client does, with
    knobs to misbehave. Every receive has a deadline."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        self.path = str(path)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""
        self.eof = False
        self.received_fds = []

    # -- sending

    @staticmethod
    def encode(method, parameters=None, **flags):
        call = {"method": method}
        if parameters is not None:
            call["parameters"] = parameters
        for k, v in flags.items():
            call[k] = v
        return json.dumps(call).encode() + b"\0"

    def send_raw(self, data, fds=None):
        if fds:
            n = socket.send_fds(self.sock, [data], list(fds))
            if n < len(data):
                self.sock.sendall(data[n:])
        else:
            self.sock.sendall(data)

    def send(self, method, parameters=None, fds=None, **flags):
        self.send_raw(self.encode(method, parameters, **flags), fds=fds)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    # -- receiving

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete message within %.1f s (buffered %r)" % (self.timeout, self.buf[:200]))
        self.sock.settimeout(remaining)
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 16)
        except ConnectionResetError:
            data, fds = b"", []
        except socket.timeout:
            raise TimeoutError("no complete message within %.1f s (buffered %r)" % (self.timeout, self.buf[:200]))
        self.received_fds.extend(fds)
        if not data:
            self.eof = True
        self.buf += data

    def recv_raw(self, timeout=None):
        """The next message's bytes without the NUL, or None at EOF."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\0" not in self.buf:
            if self.eof:
                return None
            self._fill(deadline)
        msg, _, self.buf = self.buf.partition(b"\0")
        return msg

    def recv(self, timeout=None):
        """The next message as a dict, or None at EOF."""
        raw = self.recv_raw(timeout)
        if raw is None:
            return None
        return json.loads(raw)

    def call(self, method, parameters=None, timeout=None, **flags):
        self.send(method, parameters, **flags)
        reply = self.recv(timeout)
        if reply is None:
            raise ConnectionError("EOF instead of a reply to %s" % method)
        return reply

    def wait_eof(self, timeout=None):
        """True when the peer closes before sending any further message;
        raises if a message arrives or nothing happens in time."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.eof:
            if b"\0" in self.buf:
                raise AssertionError("expected EOF, got a message: %r" % self.buf[:200])
            self._fill(deadline)
        if self.buf:
            raise AssertionError("expected EOF, got trailing bytes: %r" % self.buf[:200])
        return True

    def nothing_pending(self, wait=0.2):
        """True if no byte arrives within `wait` seconds (used only where the
        absence of something is the point, e.g. a oneway reply)."""
        if self.buf:
            return False
        r, _, _ = select.select([self.sock], [], [], wait)
        return not r

    def close(self):
        for fd in self.received_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.received_fds = []
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- processes ----------------------------------------------------------------


_live_processes = []


def _kill(proc):
    """SIGKILL: a test's leftovers need no graceful stop (SIGTERM would make
    testd wait for connections the test still holds)."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


def kill_all():
    """Kills every process this module started and is still running."""
    while _live_processes:
        _kill(_live_processes.pop())


class Testd:
    """One halyard-testd, under systemd-socket-activate (activate=True: the
    process only becomes testd on the first connection) or with --listen.

    config: text of the halyard config file (HALYARD_CONFIG), or None.
    secret: content of the credential test-secret ($CREDENTIALS_DIRECTORY),
            or None for no credentials directory.
    """

    def __init__(self, config=None, secret=None, activate=True, socket_name="io.halyard.Test", env=None,
                 tmp=None, fd_limit=None):
        check_binaries()
        self.fd_limit = fd_limit
        self.own_tmp = tmp is None
        self.tmp = tmp or TempDir()
        self.socket = self.tmp / socket_name
        self.address = "unix:%s" % self.socket
        self.config = self.tmp / "halyard.conf"
        self.config.write_text(config if config is not None else "")
        self.creds = None
        if secret is not None:
            self.creds = self.tmp / "creds"
            self.creds.mkdir()
            (self.creds / "test-secret").write_text(secret)
            os.chmod(self.creds / "test-secret", 0o400)
        self.stderr_path = self.tmp / ("testd-%s.stderr" % socket_name)
        self.activate = activate
        self.extra_env = dict(env or {})
        self.proc = None

    def start(self, timeout=DEFAULT_TIMEOUT, probe=True):
        """Starts the process. probe=True: returns once testd itself serves
        (under socket activation that takes a first connection). probe=False:
        returns once the socket listens, without connecting (under socket
        activation testd is then not running yet)."""
        env = dict(os.environ)
        for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM",
                  "CREDENTIALS_DIRECTORY", "HALYARD_CONFIG", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(k, None)
        if self.activate:
            argv = [SOCKET_ACTIVATE, "-l", str(self.socket), "--fdname=varlink",
                    "-E", "HALYARD_CONFIG=%s" % self.config]
            if self.creds:
                argv += ["-E", "CREDENTIALS_DIRECTORY=%s" % self.creds]
            for k, v in self.extra_env.items():
                argv += ["-E", "%s=%s" % (k, v)]
            argv.append(str(TESTD))
        else:
            env["HALYARD_CONFIG"] = str(self.config)
            if self.creds:
                env["CREDENTIALS_DIRECTORY"] = str(self.creds)
            env.update(self.extra_env)
            argv = [str(TESTD), "--listen=%s" % self.address]
        self._stderr = open(self.stderr_path, "wb")
        limit = self.fd_limit
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))) if limit else None
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=env, start_new_session=True, preexec_fn=preexec)
        _live_processes.append(self.proc)
        if not probe:
            wait_until(lambda: self.proc.poll() is not None or listening(self.socket), timeout,
                       what="socket %s" % self.socket)
        else:
            # Ready when the socket takes connections. Under socket activation
            # this first connection is what starts testd; wait for it, so that
            # signals reach testd and not systemd-socket-activate.
            wait_until(lambda: self.proc.poll() is not None or connectable(self.socket), timeout,
                       what="testd socket %s" % self.socket)
            if self.activate and self.proc.poll() is None:
                self.wait_exec(timeout)
        if self.proc.poll() is not None:
            raise RuntimeError("testd exited with %s:\n%s" % (self.proc.returncode, self.stderr()))
        return self

    @property
    def pid(self):
        return self.proc.pid

    def exe(self):
        """What the process runs now (socket-activate execs testd in place)."""
        try:
            return os.readlink("/proc/%d/exe" % self.proc.pid)
        except OSError:
            return None

    def wait_exec(self, timeout=DEFAULT_TIMEOUT):
        """Under socket activation: wait until the process is testd and its
        startup line is logged."""
        wait_until(lambda: self.exe() == os.path.realpath(TESTD) and "serving io.halyard.Test" in self.stderr(),
                   timeout, what="testd to start")

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def testd_stderr_lines(self):
        """The lines testd itself wrote (systemd-socket-activate's own lines
        come before its 'Execing' line)."""
        lines = self.stderr().splitlines()
        if self.activate:
            for i, l in enumerate(lines):
                if l.startswith("Execing "):
                    return lines[i + 1:]
            return []
        return lines

    def wait_stderr(self, needle, timeout=DEFAULT_TIMEOUT):
        if isinstance(needle, str):
            return wait_until(lambda: needle in self.stderr(), timeout, what="%r on testd's stderr" % needle)
        return wait_until(lambda: needle.search(self.stderr()), timeout,
                          what="%r on testd's stderr" % needle.pattern)

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def write_config(self, text):
        tmp = self.config.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, self.config)

    def connect(self, timeout=DEFAULT_TIMEOUT):
        return VarlinkConn(self.socket, timeout)

    def call(self, method, parameters=None, **flags):
        with self.connect() as c:
            return c.call(method, parameters, **flags)

    def status(self):
        r = self.call("io.halyard.Test.GetStatus", {})
        if "error" in r:
            raise AssertionError("GetStatus failed: %r" % r)
        return r["parameters"]

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("testd did not exit within %.1f s" % timeout)

    def stop(self):
        if self.proc is not None:
            _kill(self.proc)
            if self.proc in _live_processes:
                _live_processes.remove(self.proc)
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None
        if self.own_tmp:
            self.tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def start_process(argv, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """Starts a helper process that kill_all()/stop_process() will end."""
    proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=env, start_new_session=True)
    _live_processes.append(proc)
    return proc


def stop_process(proc):
    _kill(proc)
    if proc in _live_processes:
        _live_processes.remove(proc)


# ---- halyardctl ----------------------------------------------------------------


class CtlResult:
    def __init__(self, argv, rc, stdout, stderr, elapsed):
        self.argv, self.rc, self.stdout, self.stderr, self.elapsed = argv, rc, stdout, stderr, elapsed

    def __iter__(self):
        return iter((self.rc, self.stdout, self.stderr))

    def __repr__(self):
        return "halyardctl %s -> rc=%r\nstdout=%r\nstderr=%r" % (" ".join(self.argv), self.rc, self.stdout,
                                                                 self.stderr)


def halyardctl(*args, input=None, timeout=30, env=None):
    """Runs halyardctl; returns CtlResult (iterable as rc, stdout, stderr)."""
    check_binaries()
    e = dict(os.environ)
    e.pop("HALYARD_RUNTIME_DIR", None)
    if env:
        e.update(env)
    argv = [str(a) for a in args]
    t0 = time.monotonic()
    p = subprocess.run([str(HALYARDCTL)] + argv, input=input.encode() if isinstance(input, str) else input,
                       stdin=None if input is not None else subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, env=e)
    return CtlResult(argv, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"),
                     time.monotonic() - t0)


# ---- a server that never answers ------------------------------------------------


class SilentServer:
    """Listens on a unix socket, accepts every connection and never replies
    (a hung service). Runs in a thread; stop() closes everything."""

    def __init__(self, path):
        import threading

        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.conns = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                c, _ = self.listener.accept()
                self.conns.append(c)
            except socket.timeout:
                continue
            except OSError:
                break

    def stop(self):
        self.running = False
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()
        self.listener.close()


class TestCase(unittest.TestCase):
    """Base class: after every test, kills the processes that test started
    (class-level ones stay until tearDownClass/tearDownModule)."""

    maxDiff = None

    def setUp(self):
        self._procs_before = set(id(p) for p in _live_processes)

    def tearDown(self):
        for p in list(_live_processes):
            if id(p) not in self._procs_before:
                stop_process(p)

    def start_testd(self, **kwargs):
        """A Testd started for this test and stopped after it."""
        probe = kwargs.pop("probe", True)
        t = Testd(**kwargs)
        self.addCleanup(t.stop)
        return t.start(probe=probe)

    def connect(self, testd, timeout=DEFAULT_TIMEOUT):
        c = testd.connect(timeout)
        self.addCleanup(c.close)
        return c


atexit.register(kill_all)
