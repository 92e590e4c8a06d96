# SPDX-License-Identifier: MIT
"""Shared pieces of the hand-run benchmarks (tests/bench/run-queue-bench,
tests/bench/run-smtpd-bench): process accounting from /proc, a registry of
everything started so that all of it can be stopped, a private Postfix
instance as the peer, smtp-source/smtp-sink helpers, the machine description,
and running the measurements in private network + PID namespaces.

Not a test module: nothing here runs from `meson test`."""

import ctypes
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

DOMAIN = "bench.test"
SENDER = "sender@" + DOMAIN
RCPT = "rcpt@" + DOMAIN
TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

_log_prefix = "bench"


def set_log_prefix(prefix):
    global _log_prefix
    _log_prefix = prefix


def log(msg):
    print(f"[{_log_prefix} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime, starttime, state) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fl = s[s.rfind(")") + 2:].split()
    return int(fl[1]), int(fl[11]) + int(fl[12]), int(fl[13]) + int(fl[14]), int(fl[19]), fl[0]


def all_stats():
    st = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = proc_stat(int(d))
            if s:
                st[int(d)] = s
    return st


def tree(root, st=None):
    """root and its descendants (pids), from one /proc scan."""
    st = st or all_stats()
    kids = {}
    for pid, s in st.items():
        kids.setdefault(s[0], []).append(pid)
    out, pending = [], [root]
    while pending:
        p = pending.pop()
        if p in st:
            out.append(p)
            pending.extend(kids.get(p, []))
    return out


def tree_cpu_ticks(root):
    """CPU ticks of a process tree: live processes plus the root's reaped children."""
    st = all_stats()
    if root not in st:
        return None
    return sum(st[p][1] for p in tree(root, st)) + st[root][2]


def proc_cpu_ticks(pid):
    """utime+stime of one process and its reaped children."""
    s = proc_stat(pid)
    return s[1] + s[2] if s else None


def proc_mem_kb(pid):
    """(RSS, PSS) of one process in KiB, from smaps_rollup; (0, 0) if gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def mem_kb(pids):
    """Summed (RSS, PSS, number of processes) of pids, in KiB."""
    rss = pss = n = 0
    for p in pids:
        r, s = proc_mem_kb(p)
        if r or s:
            rss, pss, n = rss + r, pss + s, n + 1
    return rss, pss, n


def alive(pid):
    s = proc_stat(pid)
    return s is not None and s[4] != "Z"


class Procs:
    """Everything this run starts, so that it can all be stopped."""

    def __init__(self):
        self.popen = []
        self.extra = []  # (pid, starttime) of processes we did not fork ourselves (Postfix)

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.popen.append(p)
        return p

    def adopt(self, pid):
        s = proc_stat(pid)
        if s:
            self.extra.append((pid, s[3]))

    def reap(self):
        """Collect zombies reparented to us (we are a subreaper) that Popen does not own."""
        mine = {p.pid for p in self.popen}
        me = os.getpid()
        for pid, s in all_stats().items():
            if s[0] == me and s[4] == "Z" and pid not in mine:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.popen:
            self.popen.remove(p)

    def kill_extra(self, sig=signal.SIGKILL):
        for pid, start in self.extra:
            s = proc_stat(pid)
            if s and s[3] == start and s[4] != "Z":
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        self.extra = []
        self.reap()

    def stop_all(self):
        for p in list(self.popen):
            try:
                self.stop(p, 5)
            except Exception:
                pass
        self.kill_extra()


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def listening(port):
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fl = line.split()
                if fl[1] == want and fl[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_for(cond, timeout, what, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_pct(interval=0.5):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v), v[3] + v[4]
    t0, i0 = read()
    time.sleep(interval)
    t1, i1 = read()
    return 100.0 * (1 - (i1 - i0) / (t1 - t0)) if t1 > t0 else 0.0


def wait_quiet(a):
    """Wait (at most a.quiet_wait s) until the machine is less busy than a.quiet_pct %."""
    end = time.monotonic() + a.quiet_wait
    b = busy_pct()
    while b >= a.quiet_pct and time.monotonic() < end:
        time.sleep(1)
        b = busy_pct()
    return b


def sink_count(path):
    """Messages smtp-sink -c has counted so far (its output file)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(max(0, n - 200))
            tail = f.read().decode(errors="replace")
    except OSError:
        return 0
    m = re.findall(r"mesg=(\d+)", tail)
    return int(m[-1]) if m else 0


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.0f}"):
    return "-" if x is None else spec.format(x)


def ratio(h, p):
    return None if h is None or p is None or p == 0 else h / p


def smtp_source(procs, port, clients, count, size, seconds, out):
    """smtp-source -c -s CLIENTS -m COUNT -l SIZE against 127.0.0.1:port (one
    message per connection), stopped after `seconds`. Returns the messages
    acknowledged with 250 (its -c counter), the time, and its errors."""
    with open(out, "w") as f:
        t0 = time.monotonic()
        p = procs.start(["smtp-source", "-c", "-s", str(clients), "-m", str(count), "-l", str(size),
                         "-f", SENDER, "-t", RCPT, "-M", "client." + DOMAIN, f"127.0.0.1:{port}"],
                        stdout=f, stderr=subprocess.STDOUT)
        timed_out = False
        try:
            p.wait(seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            p.terminate()
            p.wait(10)
        t1 = time.monotonic()
        procs.stop(p)
    with open(out, errors="replace", newline="") as f:  # keep the \r between counts
        text = f.read()
    nums = re.findall(r"(\d+)\r", text)
    acked = int(nums[-1]) if nums else 0
    errors = [l for l in text.replace("\r", "\n").splitlines() if l and not l.isdigit()]
    return {"t0": t0, "acked": acked, "elapsed": t1 - t0, "rate": acked / (t1 - t0), "timed_out": timed_out,
            "errors": len(errors), "error_text": errors[0] if errors else "", "rc": p.returncode}


def start_sink(procs, port, out):
    """smtp-sink -c on 127.0.0.1:port, counting into `out`."""
    with open(out, "w") as f:
        sink = procs.start(["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                           stdout=f, stderr=subprocess.STDOUT)
    wait_for(lambda: listening(port), 20, "smtp-sink")
    return sink


# ---------------------------------------------------------------------------
# Postfix, a private instance
# ---------------------------------------------------------------------------

POSTFIX_MASTER_CF = """\
127.0.0.1:{port} inet n - n - {smtpd_maxproc} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {pf}/spool
data_directory = {pf}/data
meta_directory = /etc/postfix
myhostname = mta.{domain}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {domain}
relayhost = [127.0.0.1]:{sink}
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
maillog_file_prefixes = {scratch}
maillog_file = {pf}/postfix.log
"""


class Postfix:
    """A private Postfix instance (its own config directory and queue under
    scratch) whose smtpd listens on 127.0.0.1:port and which relays
    everything for bench.test to 127.0.0.1:sink_port. `settings` (a dict)
    replaces or adds main.cf parameters; smtpd_maxproc is the smtpd line's
    process limit. Never touches /etc/postfix's instance."""

    name = "postfix"

    def __init__(self, a, scratch, procs, port, sink_port, smtpd_maxproc=300, settings=None, subdir="postfix"):
        self.a, self.procs, self.port = a, procs, port
        self.pf = os.path.join(scratch, subdir)
        self.etc = os.path.join(self.pf, "etc")
        os.makedirs(self.etc, exist_ok=True)
        settings = dict(settings or {})
        lines = []
        for line in POSTFIX_MAIN_CF.format(pf=self.pf, domain=DOMAIN, sink=sink_port, scratch=scratch).splitlines():
            key = line.split("=", 1)[0].strip()
            lines.append(f"{key} = {settings.pop(key)}" if key in settings else line)
        lines += [f"{k} = {v}" for k, v in settings.items()]
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(port=port, smtpd_maxproc=smtpd_maxproc))
        self.master = None

    def version(self):
        r = subprocess.run(["postconf", "-c", self.etc, "-h", "mail_version"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    def start(self):
        for d in ("spool", "data"):
            shutil.rmtree(os.path.join(self.pf, d), ignore_errors=True)
            os.makedirs(os.path.join(self.pf, d))
        shutil.chown(os.path.join(self.pf, "data"), "postfix")
        with open(os.path.join(self.pf, "start.log"), "a") as lf:
            r = subprocess.run(["postfix", "-c", self.etc, "start"], stdout=lf, stderr=lf, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed, see {self.pf}/start.log")
        with open(os.path.join(self.pf, "spool", "pid", "master.pid")) as f:
            self.master = int(f.read().strip())
        self.procs.adopt(self.master)
        wait_for(lambda: listening(self.port), 20, f"postfix on port {self.port}")

    def pids(self):
        return tree(self.master) if self.master else []

    def cpu_ticks(self):
        return tree_cpu_ticks(self.master)

    def stop(self):
        if self.master is None:
            return
        pids = tree(self.master)
        for p in pids:
            self.procs.adopt(p)
        subprocess.run(["postfix", "-c", self.etc, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        end = time.monotonic() + 15
        while time.monotonic() < end and alive(self.master):
            self.procs.reap()
            time.sleep(0.1)
        self.procs.kill_extra()
        self.master = None

    def intake(self, clients, count, size, seconds):
        return smtp_source(self.procs, self.port, clients, count, size, seconds, os.path.join(self.pf, "source.out"))


# ---------------------------------------------------------------------------
# machine, namespaces
# ---------------------------------------------------------------------------

def machine_lines(scratch, isolated):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    fsinfo = subprocess.run(["findmnt", "-no", "FSTYPE,OPTIONS", "--target", scratch], capture_output=True,
                            text=True).stdout.strip()
    return [f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
            f"machine: nproc={os.cpu_count()} ({cpu}), kernel {platform.release()}, "
            f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') // 2**20} MiB RAM; "
            f"scratch {scratch} on {fsinfo}",
            "isolation: " + ("private net+pid namespaces (unshare), loopback only" if isolated
                             else "none (host loopback, 127.0.0.1 only)")]


UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]


def can_unshare():
    return subprocess.run(UNSHARE + ["true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def run_inner(args, isolated):
    """Runs `args` (the script itself with --inside) in private namespaces if
    isolated; on SIGINT/SIGTERM/SIGHUP tells the inner runner to stop what it
    started. Returns its exit status."""
    child = None

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        child = subprocess.Popen((UNSHARE if isolated else []) + args)
        return child.wait()
    except KeyboardInterrupt:
        if child and child.poll() is None:
            # unshare blocks SIGINT/SIGTERM and forwards nothing: tell the inner
            # runner itself (it stops what it started), then give up on it.
            inner = [p for p, s in all_stats().items() if s[0] == child.pid] if isolated else [child.pid]
            for p in inner:
                try:
                    os.kill(p, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()  # with --kill-child the whole namespace dies with unshare
                child.wait()
        return 130


def inner_setup(isolated, nofile=65536):
    """In the inner runner: signals end the run (and its finally: clauses),
    we become the subreaper of daemonizing servers (Postfix's master), the
    fd limit is raised, and in a private network namespace loopback is
    brought up with room for many TIME_WAITs."""
    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < nofile:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))  # as root we may raise the hard limit
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, nofile) if hard != resource.RLIM_INFINITY else nofile, hard))
    if isolated:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        # per network namespace: room for the TIME_WAITs of one-connection-per-message runs
        for k, v in (("ip_local_port_range", "10000 65000"), ("tcp_tw_reuse", "1")):
            with open(f"/proc/sys/net/ipv4/{k}", "w") as f:
                f.write(v)
