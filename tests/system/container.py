"""Booted-container harness for halyard's system tests (stdlib only).

A test gets a real systemd 252 as PID 1 of an ephemeral container made from
this machine's own root, with halyard's staged install laid over /usr:

    stage = stage_install(source_root, work_dir)     # meson setup/install
    with Container(stage) as c:                       # boots, waits, tears down
        c.systemctl('enable', '--now', 'halyard.target', check=True)
        rc, out, err = c.run('halyardctl', 'info', 'unix:/run/halyard/io.halyard.Test')

How (see ../shared/notes/varlink-systemd.md, section 3.4 and the Addendum):

    systemd-nspawn -D / --volatile=yes --register=no --keep-unit -M NAME
        --console=passive --private-network
        --overlay-ro=/usr:STAGE/usr:LAYER/usr:/usr
        -b systemd.firstboot=off systemd.mask=systemd-networkd-wait-online.service

  * --volatile=yes: tmpfs root with the host's /usr, empty /etc and /var;
    nothing the container does reaches the host.
  * --overlay-ro: STAGE/usr on top of the host's /usr (the rightmost lower
    layer wins), so halyard's units are in /usr/lib/systemd/system and its
    binaries in /usr/bin and /usr/libexec/halyard; LAYER/usr (the harness's
    own files, see DEFAULT_USR_FILES) above that.
  * systemd.firstboot=off: with an empty /etc, systemd-firstboot would wait
    for input forever.
  * systemd.mask=systemd-networkd-wait-online.service: with --private-network
    nothing ever comes online, wait-online holds the boot in "starting" for its
    full 2 min timeout (measured). Masked, the boot takes about 2-4 s.
    (Arguments after -b are the container's kernel command line: systemd in a
    container reads its own argv instead of /proc/cmdline.)
  * the container's PID 1 is the systemd child of the nspawn process; commands
    run inside with `nsenter -t PID -a`.
  * the empty /etc makes systemd apply the presets at this first boot; an
    extra /usr layer adds a `disable *` preset (DEFAULT_USR_FILES), so no
    host service and no halyard unit is enabled at boot. The boot is done
    when `is-system-running` leaves initializing/starting: "running", or
    "degraded" if some unit failed (not an error for the harness; tests
    check halyard's own units).

Teardown always happens and every wait is bounded: context manager, atexit,
SIGTERM/SIGHUP turned into SystemExit so `with`/`finally` run, and nspawn has
PR_SET_PDEATHSIG=SIGTERM so that even a SIGKILLed harness makes nspawn power
the container off. Normal teardown: SIGTERM to nspawn (the container powers
off, ~1-2 s), bounded by `stop_timeout`; then SIGKILL to the container's PID 1
(which kills its whole PID namespace) and to nspawn. Killing nspawn alone is
NOT enough: the container's systemd survives its parent (tested).
A command that overruns its timeout in run() is killed before its nsenter
(see _kill_nsenter: otherwise its zombie holds the container's shutdown).
"""

import atexit
import ctypes
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import namedtuple

NSPAWN = shutil.which('systemd-nspawn') or '/usr/bin/systemd-nspawn'
NSENTER = shutil.which('nsenter') or '/usr/bin/nsenter'

# Environment for commands inside the container: nothing from the caller
# (meson test sets odd variables, a pager or colours would garble output).
INNER_ENV = {
    'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'LANG': 'C.UTF-8',
    'TERM': 'dumb',
    'SYSTEMD_PAGER': '',
    'SYSTEMD_COLORS': '0',
    'SYSTEMD_LOG_COLOR': '0',
    'HOME': '/root',
}

DEFAULT_MASKS = ('systemd-networkd-wait-online.service',)

# The empty /etc makes systemd run `preset-all` at every boot of the
# container, and Debian's presets enable everything installed on the host:
# postfix, postgresql, ... start (and fail, with no config: "degraded"), and
# halyard.target would be enabled and started before the test could do it.
# This preset, in an extra /usr layer above the stage, disables every unit
# that has an [Install] section; static units (journald, dbus, logind) and
# vendor .wants links still apply. Boot: ~2.5-4 s and "running" instead of
# ~5-6 s and "degraded" (measured). halyard is then "installed, not enabled
# yet", the state an operator's `systemctl enable --now halyard.target`
# starts from. A test that needs a host service starts it explicitly
# (disabled is not masked), or passes its own usr_files.
DEFAULT_USR_FILES = {
    'lib/systemd/system-preset/00-halyard-systest.preset':
        '# tests/system/container.py: nothing enabled at boot\n'
        'disable *\n',
}

# Run inside the container as: python3 -c CLIENT PATH METHOD PARAMS_JSON TIMEOUT
# One call, one reply: a JSON object and a NUL each way (varlink framing).
_VARLINK_CLIENT = r'''
import json, socket, sys
path, method, params, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(timeout)
s.connect(path)
s.sendall(json.dumps({"method": method, "parameters": json.loads(params)}).encode() + b"\0")
buf = b""
while b"\0" not in buf:
    d = s.recv(65536)
    if not d:
        sys.exit("connection closed before a complete reply: %r" % buf)
    buf += d
sys.stdout.write(buf.split(b"\0", 1)[0].decode())
'''

Result = namedtuple('Result', 'rc stdout stderr')


class HarnessError(RuntimeError):
    pass


def log(*args):
    print('[container %.3f]' % time.monotonic(), *args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# Staging the install


def _meson():
    return os.environ.get('HALYARD_MESON') or shutil.which('meson') or 'meson'


def _run_logged(cmd, timeout, cwd=None):
    log('$', ' '.join(shlex.quote(c) for c in cmd))
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise HarnessError('%s failed (exit %d):\n%s' % (cmd[0:2], r.returncode, r.stdout[-8000:]))
    return r.stdout


def _build_options(build_dir):
    try:
        with open(os.path.join(build_dir, 'meson-info', 'intro-buildoptions.json')) as f:
            return {o['name']: o['value'] for o in json.load(f)}
    except (OSError, ValueError, KeyError):
        return {}


def stage_install(source_root, work_dir, options=None, timeout=600, reuse_build=None):
    """Install a build of source_root with prefix /usr and install_tests=true
    into WORK/stage (wiped first) and return the stage path.

    If reuse_build is a configured build dir with prefix=/usr and
    install_tests=true (e.g. the build `meson test` runs from), it is staged
    as is with --no-rebuild (meson test has just built it). Otherwise a
    private build in WORK/build is configured once and built incrementally."""
    source_root = os.path.abspath(source_root)
    work_dir = os.path.abspath(work_dir)
    build = os.path.join(work_dir, 'build')
    stage = os.path.join(work_dir, 'stage')
    want = {'prefix': '/usr', 'install_tests': True}
    want.update(options or {})
    os.makedirs(work_dir, exist_ok=True)
    t0 = time.monotonic()
    install_args = ['--quiet']
    have = _build_options(reuse_build) if reuse_build else {}
    if reuse_build and all(have.get(k) == v for k, v in want.items()):
        build = os.path.abspath(reuse_build)
        install_args.append('--no-rebuild')
        log('staging the existing build %s' % build)
    elif not os.path.exists(os.path.join(build, 'meson-private', 'coredata.dat')):
        _run_logged([_meson(), 'setup', build, source_root, '-Dsystem_tests=false'] +
                    ['-D%s=%s' % (k, _fmt(v)) for k, v in want.items()], timeout)
    else:
        have = _build_options(build)
        diff = ['-D%s=%s' % (k, _fmt(v)) for k, v in want.items() if have.get(k) != v]
        if diff:
            _run_logged([_meson(), 'configure', build] + diff, timeout)
    if os.path.exists(stage):
        shutil.rmtree(stage)
    # Without --no-rebuild, `meson install` first builds what changed.
    _run_logged([_meson(), 'install', '-C', build, '--destdir', stage] + install_args, timeout)
    log('staged install in %s (%.1f s)' % (stage, time.monotonic() - t0))
    return stage


class WorkDirLock:
    """Exclusive use of a work dir (its stage is the container's /usr layer:
    a second run wiping it would pull the floor from under the first)."""

    def __init__(self, work_dir, timeout=600.0):
        self.path = os.path.join(os.path.abspath(work_dir), '.lock')
        self.timeout = timeout
        self.fd = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        end = time.monotonic() + self.timeout
        waited = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > end:
                    os.close(self.fd)
                    self.fd = None
                    raise HarnessError('%s is busy (another system test run?) after %.0f s'
                                       % (self.path, self.timeout))
                if not waited:
                    log('waiting for %s' % self.path)
                    waited = True
                time.sleep(0.5)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)   # drops the flock
            self.fd = None

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()
        return False


def _fmt(v):
    return ('true' if v else 'false') if isinstance(v, bool) else str(v)


# ----------------------------------------------------------------------------
# Process helpers


def _proc_table():
    """{pid: (ppid, comm)} for every process."""
    table = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parens: it ends at the last ')'.
        lpar, rpar = stat.find('('), stat.rfind(')')
        fields = stat[rpar + 2:].split()
        table[int(d)] = (int(fields[1]), stat[lpar + 1:rpar])
    return table


def _descendants(pid, table=None):
    table = table or _proc_table()
    children = {}
    for p, (pp, _) in table.items():
        children.setdefault(pp, []).append(p)
    out, pending = [], [pid]
    while pending:
        p = pending.pop()
        for c in children.get(p, []):
            out.append(c)
            pending.append(c)
    return out


def _nspid(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('NSpid:'):
                    return line.split()[1:]
    except OSError:
        pass
    return []


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _set_pdeathsig():
    # Runs in the child between fork and exec: if the harness dies (even by
    # SIGKILL, e.g. a meson test timeout), nspawn gets SIGTERM and powers
    # the container off by itself.
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# ----------------------------------------------------------------------------
# Global teardown: atexit and fatal signals

_live = set()
_live_lock = threading.Lock()
_handlers_installed = False


def _teardown_all():
    with _live_lock:
        live = list(_live)
    for c in live:
        try:
            c.stop()
        except Exception as e:  # never let one failure keep the others alive
            log('teardown of %s failed: %s' % (c.name, e))


def _on_signal(signum, frame):
    # Unwind through `with`/`finally` (Container.__exit__ tears down).
    raise SystemExit(128 + signum)


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
        # SIGINT already raises KeyboardInterrupt, which unwinds the same way.


# ----------------------------------------------------------------------------
# The container


class Container:
    """One booted ephemeral container. Use as a context manager."""

    def __init__(self, stage=None, name=None, boot_timeout=60.0, stop_timeout=15.0,
                 masks=DEFAULT_MASKS, kernel_args=(), nspawn_args=(), log_dir=None,
                 usr_files=None):
        self.stage = os.path.abspath(stage) if stage else None
        # Machine names: hostname rules, <= 64 chars; unique per run.
        self.name = name or 'halyard-st-%d-%s' % (os.getpid(), uuid.uuid4().hex[:8])
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout
        self.masks = tuple(masks)
        self.kernel_args = tuple(kernel_args)
        self.nspawn_args = tuple(nspawn_args)
        self.log_dir = log_dir
        # {path relative to /usr: content}, laid over the stage.
        self.usr_files = dict(DEFAULT_USR_FILES if usr_files is None else usr_files)
        self._usr_layer = None
        self.log_path = None
        self.proc = None
        self.pid = None           # container PID 1, as seen from the host
        self.boot_seconds = None
        self.stop_seconds = None
        self.state = None         # is-system-running after boot
        self._log_file = None
        self._stopped = False
        self._stop_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def command(self):
        cmd = [NSPAWN, '-D', '/', '--volatile=yes', '--register=no', '--keep-unit',
               '-M', self.name, '--console=passive', '--private-network']
        layers = ['/usr']     # lowest first; nspawn puts the last one on top
        if self.stage:
            usr = os.path.join(self.stage, 'usr')
            if not os.path.isdir(usr):
                raise HarnessError('stage %s has no usr/' % self.stage)
            layers.append(usr)
        if self._usr_layer:
            layers.append(os.path.join(self._usr_layer, 'usr'))
        if len(layers) > 1:
            if any(':' in l for l in layers):
                raise HarnessError('overlay paths must not contain ":": %s' % layers)
            cmd.append('--overlay-ro=%s:/usr' % ':'.join(layers))
        cmd += list(self.nspawn_args)
        cmd += ['-b', 'systemd.firstboot=off']
        cmd += ['systemd.mask=%s' % m for m in self.masks]
        cmd += list(self.kernel_args)
        return cmd

    def start(self):
        if os.geteuid() != 0:
            raise HarnessError('the container harness needs root')
        if self.proc is not None or self._stopped:
            raise HarnessError('a Container boots once; make a new one')
        _install_handlers()
        with _live_lock:
            # Registered before anything is created: a signal from here on
            # still finds the container to tear down.
            _live.add(self)
        t0 = time.monotonic()
        try:
            log_dir = self.log_dir or (self.stage and os.path.dirname(self.stage)) or '/tmp'
            os.makedirs(log_dir, exist_ok=True)
            _sweep(log_dir)
            if self.usr_files:
                self._usr_layer = os.path.join(log_dir, '%s.usr' % self.name)
                for rel, content in self.usr_files.items():
                    p = os.path.join(self._usr_layer, 'usr', rel)
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    with open(p, 'w') as f:
                        f.write(content)
            cmd = self.command()
            self.log_path = os.path.join(log_dir, '%s.nspawn.log' % self.name)
            self._log_file = open(self.log_path, 'w')
            log('booting', self.name, '(nspawn log: %s)' % self.log_path)
            log('$', ' '.join(shlex.quote(c) for c in cmd))
            t0 = time.monotonic()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_set_pdeathsig, cwd='/')
            self._wait_booted(t0)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0
        log('%s up in %.2f s, PID 1 = host pid %d, state %s'
            % (self.name, self.boot_seconds, self.pid, self.state))
        return self

    def _find_init(self):
        table = _proc_table()
        for p in _descendants(self.proc.pid, table):
            ns = _nspid(p)
            if len(ns) >= 2 and ns[-1] == '1' and table[p][1] == 'systemd':
                return p
        return None

    def _wait_booted(self, t0):
        deadline = t0 + self.boot_timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise HarnessError('systemd-nspawn exited with %s during boot:\n%s'
                                   % (self.proc.returncode, self.log_tail()))
            now = time.monotonic()
            if now > deadline:
                raise HarnessError('boot not finished after %.0f s (last state %r)\n%s\n%s'
                                   % (self.boot_timeout, last, self._jobs(), self.log_tail()))
            if self.pid is None:
                self.pid = self._find_init()
            if self.pid is not None:
                # No --wait: it cannot be bounded from here without killing
                # nsenter, and polling also notices nspawn dying.
                r = self.run('systemctl', 'is-system-running',
                             timeout=max(1.0, min(10.0, deadline - now)))
                last = r.stdout.strip() or r.stderr.strip()
                if last in ('running', 'degraded'):
                    self.state = last
                    return
                if last == 'maintenance':
                    raise HarnessError('container in maintenance (emergency/rescue) mode:\n%s'
                                       % self.log_tail())
            time.sleep(0.1)

    def _jobs(self):
        if self.pid is None or not _alive(self.pid):
            return ''
        try:
            r = self.run('systemctl', 'list-jobs', '--no-legend', timeout=5)
            return 'pending jobs:\n' + r.stdout
        except Exception as e:
            return 'list-jobs failed: %s' % e

    def log_tail(self, n=40):
        try:
            with open(self.log_path, errors='replace') as f:
                return ''.join(f.readlines()[-n:])
        except (OSError, TypeError):
            return ''

    def stop(self):
        """Tear down; idempotent, bounded, safe from signal handlers/atexit."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            sigs = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
            in_main = threading.current_thread() is threading.main_thread()
            if in_main:
                old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
            try:
                self._stop()
            finally:
                if in_main:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                with _live_lock:
                    _live.discard(self)
                if self._log_file:
                    self._log_file.close()
                if self._usr_layer:
                    shutil.rmtree(self._usr_layer, ignore_errors=True)

    def _stop(self):
        t0 = time.monotonic()
        proc = self.proc
        if proc is None:
            return
        init = self.pid or (self._find_init() if proc.poll() is None else None)
        if proc.poll() is None:
            # nspawn turns SIGTERM into an orderly poweroff of the container.
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                log('%s: no poweroff after %.0f s, killing' % (self.name, self.stop_timeout))
        # Whatever is left: SIGKILL to the container's PID 1 ends its whole
        # PID namespace; then nspawn and its process group.
        if init is not None and _alive(init) and _nspid(init)[-1:] == ['1']:
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log('%s: nspawn pid %d did not exit after SIGKILL' % (self.name, proc.pid))
        if init is not None:
            end = time.monotonic() + 5
            while _alive(init) and time.monotonic() < end:
                time.sleep(0.05)
        # nspawn removes this itself on a clean exit, not when killed.
        prop = '/run/systemd/nspawn/propagate/%s' % self.name
        try:
            os.rmdir(prop)
        except FileNotFoundError:
            pass
        except OSError as e:
            log('cannot remove %s: %s' % (prop, e))
        self.stop_seconds = time.monotonic() - t0
        log('%s down in %.2f s (nspawn exit %s)' % (self.name, self.stop_seconds, proc.returncode))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- inside the container ------------------------------------------------

    def run(self, *argv, input=None, timeout=30.0, check=False, env=None):
        """Run argv inside the container; returns Result(rc, stdout, stderr).
        rc is -9 after a timeout (the command is killed), -1 if nsenter failed."""
        if self.pid is None or self._stopped:
            raise HarnessError('container %s is not running' % self.name)
        e = dict(INNER_ENV)
        e.update(env or {})
        cmd = [NSENTER, '-t', str(self.pid), '-a', '--', '/usr/bin/env', '-i'] + \
              ['%s=%s' % kv for kv in e.items()] + list(argv)
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        try:
            out, err = p.communicate(input.encode() if isinstance(input, str) else input,
                                     timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            self._kill_nsenter(p)
            out, err = p.communicate()
            rc = -9
            err += b'\n[harness] timed out after %.1f s' % timeout
        res = Result(rc, out.decode(errors='replace'), err.decode(errors='replace'))
        if check and rc != 0:
            raise HarnessError('in %s: %s -> exit %d\nstdout: %s\nstderr: %s'
                               % (self.name, ' '.join(map(shlex.quote, argv)), rc,
                                  res.stdout, res.stderr))
        return res

    @staticmethod
    def _kill_nsenter(p):
        # nsenter forks the command into the container's PID namespace and
        # waits for it. Kill the command first and let nsenter reap it: if
        # nsenter died first, the orphan would be reparented to the HOST's
        # PID 1 (it is nsenter's namespace that picks the reaper), which
        # here is not systemd and reaps late; until then the zombie stays in
        # the container's PID namespace and holds its shutdown ~10 s.
        for c in _descendants(p.pid):
            try:
                os.kill(c, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def sh(self, script, **kw):
        return self.run('/bin/sh', '-ec', script, **kw)

    def systemctl(self, *args, **kw):
        return self.run('systemctl', '--no-pager', *args, **kw)

    def write_file(self, path, content, mode=0o644, owner='root:root'):
        """Create path (and its parents) inside the container."""
        data = content.encode() if isinstance(content, str) else content
        d = os.path.dirname(path)
        # Missing parents get 0755 (umask 022): a sandboxed reader needs to
        # traverse them (e.g. /etc/halyard for a DynamicUser= service).
        # mktemp creates the file 0600; chmod/chown then mv make it appear
        # complete and with its final mode at once.
        script = ('umask 022; mkdir -p -- %s; tmp=$(mktemp %s.XXXXXX); cat > "$tmp"; '
                  'chmod %o "$tmp"; chown %s "$tmp"; mv -f -- "$tmp" %s'
                  % (shlex.quote(d), shlex.quote(path), mode, owner, shlex.quote(path)))
        self.sh(script, input=data, check=True)

    def read_file(self, path):
        return self.run('cat', '--', path, check=True).stdout

    def wait_for(self, predicate, timeout=10.0, interval=0.1, what='condition'):
        """Poll predicate() until it returns a true value (returned) or timeout."""
        end = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() > end:
                raise HarnessError('timed out after %.1f s waiting for %s' % (timeout, what))
            time.sleep(interval)

    def varlink_call(self, address, method, parameters=None, timeout=10.0):
        """One varlink call from inside the container with a minimal python
        client (no halyard code involved). Returns the reply object, e.g.
        {"parameters": {...}} or {"error": "...", "parameters": {...}}."""
        path = address[5:] if address.startswith('unix:') else address
        r = self.run('/usr/bin/python3', '-c', _VARLINK_CLIENT, path, method,
                     json.dumps(parameters or {}), str(timeout), timeout=timeout + 5)
        if r.rc != 0:
            raise HarnessError('varlink call %s on %s failed (exit %d): %s'
                               % (method, address, r.rc, r.stderr.strip()))
        return json.loads(r.stdout)

    def unit_property(self, unit, prop):
        return self.systemctl('show', '-p', prop, '--value', unit, check=True).stdout.strip()

    def setup_snippets(self, reload=True):
        """Apply sysusers.d/tmpfiles.d and reload units, as a package's
        postinst would. Boot already does all three for files present at
        boot; this matters for files written later. Idempotent.
        daemon-reload costs ~2 s; `systemctl enable` reloads by itself."""
        self.run('systemd-sysusers', check=True, timeout=30)
        # --create exits 65 (DATAERR) when some unrelated host snippet has a
        # line it cannot apply in this container; halyard's own lines are
        # checked by the tests, so only report.
        r = self.run('systemd-tmpfiles', '--create', timeout=60)
        if r.rc not in (0, 65, 73):
            raise HarnessError('systemd-tmpfiles --create: exit %d\n%s' % (r.rc, r.stderr))
        if reload:
            self.systemctl('daemon-reload', check=True, timeout=60)


def _sweep(log_dir, keep_logs=30):
    """Remove what earlier runs could not (a SIGKILLed harness leaves its
    NAME.usr layer behind) and keep only the newest logs."""
    running = ' '.join(leftovers())
    try:
        names = os.listdir(log_dir)
    except OSError:
        return
    for n in names:
        p = os.path.join(log_dir, n)
        if n.startswith('halyard-st-') and n.endswith('.usr') and n[:-4] not in running:
            try:
                old = time.time() - os.path.getmtime(p) > 300  # not one being set up
            except OSError:
                continue
            if old:
                shutil.rmtree(p, ignore_errors=True)
    logs = [os.path.join(log_dir, n) for n in names
            if n.startswith('halyard-st-') and n.endswith(('.nspawn.log', '.journal.txt'))]
    logs.sort(key=lambda p: os.path.getmtime(p) if os.path.exists(p) else 0)
    for p in logs[:-keep_logs]:
        try:
            os.unlink(p)
        except OSError:
            pass


# ----------------------------------------------------------------------------
# Leftover checks, for the harness's own tests


def leftovers(name=None):
    """Processes, mounts and directories a container may have left behind."""
    found = []
    for p, (pp, comm) in _proc_table().items():
        if p == os.getpid():
            continue
        try:
            with open('/proc/%d/cmdline' % p, 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if comm == 'systemd-nspawn' and (name is None or name in cmdline):
            found.append('process %d: %s' % (p, cmdline))
        elif 'systemd.firstboot=off' in cmdline:
            found.append('process %d: %s' % (p, cmdline))
    with open('/proc/self/mountinfo') as f:
        for line in f:
            if 'nspawn' in line or (name and name in line):
                found.append('mount: ' + line.strip())
    prop = '/run/systemd/nspawn/propagate'
    if os.path.isdir(prop):
        for d in os.listdir(prop):
            if name is None or d == name:
                found.append('dir: %s/%s' % (prop, d))
    return found
