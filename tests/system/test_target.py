#!/usr/bin/python3
"""System test: `systemctl enable --now halyard.target` in a booted container.

Stages an install of the source tree (prefix /usr, install_tests=true), boots
an ephemeral container with it over /usr (see container.py), and checks:

  1. halyard.target enables and starts, and pulls in halyard-testd.socket
     (/run/halyard/io.halyard.Test, mode 0666, registry symlink);
  2. the harness and systemd work: a transient DynamicUser unit runs;
  3. halyard-testd, socket-activated: a varlink GetInfo (raw python client,
     and halyardctl when the stage has it) starts it, it is active with a
     STATUS=, journalctl has its start entries, it got its credential, config
     and state directory, runs sandboxed (no caps, NoNewPrivs, seccomp,
     unprivileged), `systemctl reload` applies a new config and refuses a
     bad one (old one keeps running), `systemctl stop` drains cleanly and the
     socket re-activates it;
  4. `systemctl stop halyard.target` stops sockets and services, `start`
     brings the sockets back.

Run (as root):
  /usr/bin/python3 tests/system/test_target.py [--source-root DIR] [--work-dir DIR]
                                               [--stage DIR] [--build-dir DIR]
                                               [unittest args, e.g. -v]
  --source-root  the tree to build (default: this file's ../..; --build-root
                 is accepted as an alias); env HALYARD_SOURCE_ROOT
  --work-dir     private build + stage + logs (default SOURCE/build-systest);
                 env HALYARD_SYSTEST_DIR
  --stage        use this staged install (a DESTDIR with usr/) instead of
                 building one; env HALYARD_STAGE
  --build-dir    stage this build dir as is (meson install --no-rebuild) if
                 it is configured with prefix=/usr and install_tests=true;
                 otherwise a private build is used; env HALYARD_BUILD_DIR
Exit status: 0 pass, 1 fail, 77 everything skipped.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import container  # noqa: E402

ADDRESS = 'unix:/run/halyard/io.halyard.Test'
SOCKET_PATH = '/run/halyard/io.halyard.Test'
TESTD = '/usr/libexec/halyard/halyard-testd'
HALYARDCTL = '/usr/bin/halyardctl'
SERVICE = 'halyard-testd.service'
SOCKET = 'halyard-testd.socket'

# halyard-queued delivers sys.test to the sink the test starts in the container.
QUEUE_CONFIG = ('[Queue]\nHostName=queued.sys.test\nRoutes=sys.test=smtp:[127.0.0.1]:2526\nRetrySchedule=1s\n'
                '[Smtpd]\nHostName=smtpd.sys.test\nLocalDomains=sys.test\n')
CONFIG = '# written by tests/system/test_target.py\n[Test]\nGreeting=hello from the system test\n' + QUEUE_CONFIG
CONFIG_RELOADED = '# written by tests/system/test_target.py\n[Test]\nGreeting=reloaded\n' + QUEUE_CONFIG
# Refused by `halyard-testd --check` (MaxConnections is a number).
CONFIG_BAD = '[Test]\nGreeting=must not be applied\nMaxConnections=many\n'
SECRET = 'system-test-secret\n'

ARGS = None

SINK = r"""
import time
from aiosmtpd.controller import Controller
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open('/run/sink.txt', 'ab') as f:
            f.write(envelope.original_content)
        return '250 2.0.0 Ok'
Controller(Handler(), hostname='127.0.0.1', port=2526).start()
open('/run/sink.ready', 'w').close()
time.sleep(600)
"""

SMTP_SEND = r"""
import smtplib
with smtplib.SMTP('127.0.0.1', 25, timeout=20) as s:
    s.ehlo('client.sys.test')
    r = s.sendmail('a@sys.test', ['user@sys.test'], 'From: a@sys.test\r\nTo: user@sys.test\r\nSubject: through smtpd\r\n\r\nhi\r\n')
    print('250 accepted', r)
"""

SUBMIT = r"""
import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP('127.0.0.1', 587, timeout=20) as s:
    s.ehlo('client.sys.test')
    print('before auth', s.mail('alice@sys.test')[0])
    s.rset()
    s.starttls(context=ctx)
    s.ehlo('client.sys.test')
    s.login('alice', 'alice secret')
    s.sendmail('alice@sys.test', ['friend@sys.test'], 'From: alice@sys.test\r\nSubject: via submission\r\n\r\nhi\r\n')
    print('sent')
"""

POLICY_FILE = '/etc/halyard/policy.hal'
POLICY_DROPIN = '/etc/halyard/halyard.conf.d/40-policy-systest.conf'
POLICY_TEXT = 'on helo {\n    if ($arguments["host"] == "policy.reject.test")\n        Reject("No HELO like that here");\n}\n'
POLICY_SEND = r"""
import smtplib
with smtplib.SMTP('127.0.0.1', 25, timeout=20) as s:
    code, text = s.ehlo('policy.reject.test')
    print(code, text)
    print(s.ehlo('policy.ok.test')[0])
"""

ARC_DROPIN = '/etc/halyard/halyard.conf.d/45-arc-systest.conf'
ARC_SEND = r"""
import smtplib
with smtplib.SMTP('127.0.0.1', 25, timeout=30) as s:
    s.ehlo('client.sys.test')
    s.sendmail('a@sys.test', ['user@sys.test'], 'Authentication-Results: smtpd.sys.test; dkim=pass (forged)\r\n'
               'From: a@sys.test\r\nTo: user@sys.test\r\nSubject: authenticated\r\n\r\nhi\r\n')
    print('sent')
"""

ENQUEUE = r"""
import json, os, socket
fd = os.memfd_create('msg')
os.write(fd, b'From: a@sys.test\r\nTo: user@sys.test\r\nSubject: system test\r\n\r\nhello\r\n')
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect('/run/halyard/io.halyard.Queue')
call = {'method': 'io.halyard.Queue.Enqueue', 'parameters': {'sender': 'a@sys.test', 'recipients': [{'address': 'user@sys.test'}], 'content': 0}}
socket.send_fds(s, [json.dumps(call).encode() + b'\0'], [fd])
buf = b''
while not buf.endswith(b'\0'):
    buf += s.recv(4096)
print(buf[:-1].decode())
"""


# halyard-tlsrptd's system test (test_tlsrptd_timer): its own config drop-in
# (no network in the container: DNS goes nowhere but loopback, and
# libunbound answers names under .test NXDOMAIN from its built-in local
# zone, so the report ends as "no TLSRPT record" at once),
# the results it feeds (yesterday, so the daily run picks them up), and a
# runtime drop-in that makes halyard-tlsrptd.timer fire now.
TLSRPT_ADDRESS = 'unix:/run/halyard/io.halyard.TlsRpt'
TLSRPT_DROPIN = '/etc/halyard/halyard.conf.d/50-tlsrpt-systest.conf'
TLSRPT_CONFIG = ('[TlsRpt]\nSubmitter=mta.sys.test\nOrganizationName=halyard system test\n'
                 '[DNS]\nForwarders=127.0.0.1@9\nTimeout=3s\n')
TLSRPT_TIMER_NOW = '/run/systemd/system/halyard-tlsrptd.timer.d/50-now.conf'
# test_tlsrptd_timer_then_signed_report: the report mail signed by
# halyard-arcd; a DNS server on loopback publishes the _smtp._tls record.
TLSRPT_SIGN_DROPIN = '/etc/halyard/halyard.conf.d/51-tlsrpt-sign-systest.conf'
TLSRPT_SIGN_CONFIG = ('[TlsRpt]\nSubmitter=mta.sys.test\nFrom=tlsrpt@mta.sys.test\nSign=yes\nSignSelector=tlsrpt\n'
                      '[Arc]\nKey=mta.sys.test tlsrpt dkim\n'
                      '[DNS]\nForwarders=127.0.0.1@5353\nTransparentZones=sys.test\nDNSSEC=no\nTimeout=3s\n')
TLSRPT_DNS = r"""
import socket
import dns.message, dns.rcode, dns.rdatatype, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 5353))
open('/run/tlsrpt-dns.ready', 'w').close()
while True:
    data, peer = s.recvfrom(4096)
    try:
        q = dns.message.from_wire(data)
    except Exception:
        continue
    r = dns.message.make_response(q)
    qn = q.question[0]
    if qn.name.to_text().lower() == '_smtp._tls.rpt-sign.sys.test.' and qn.rdtype == dns.rdatatype.TXT:
        r.answer.append(dns.rrset.from_text(qn.name, 60, 'IN', 'TXT', '"v=TLSRPTv1; rua=mailto:tlsrpt@sys.test"'))
    elif qn.name.to_text().lower() != 'rpt-sign.sys.test.':
        r.set_rcode(dns.rcode.NXDOMAIN)
    s.sendto(r.to_wire(), peer)
"""
TLSRPT_FEED = r"""
import json, socket, sys, time
y = int(time.time()) // 86400 * 86400 - 43200
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect('/run/halyard/io.halyard.TlsRpt')
def send(method, params, oneway=False):
    call = {'method': method, 'parameters': params}
    if oneway:
        call['oneway'] = True
    s.sendall(json.dumps(call).encode() + b'\0')
for i in range(3):
    send('io.halyard.TlsRpt.Record', {'policyDomain': 'rpt.sys.test', 'policyType': 'sts', 'time': y,
         'policyStrings': ['version: STSv1', 'mode: enforce'], 'mxHosts': ['mx.sys.test'], 'success': i != 2,
         'resultType': 'certificate-expired', 'receivingIp': '192.0.2.25'}, oneway=True)
send('io.halyard.TlsRpt.GetStatus', {})
buf = b''
while not buf.endswith(b'\0'):
    buf += s.recv(65536)
print(buf[:-1].decode())
"""


def parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument('--source-root', '--build-root', dest='source_root',
                    default=os.environ.get('HALYARD_SOURCE_ROOT') or os.path.dirname(os.path.dirname(here)))
    ap.add_argument('--work-dir', default=os.environ.get('HALYARD_SYSTEST_DIR'))
    ap.add_argument('--stage', default=os.environ.get('HALYARD_STAGE'))
    ap.add_argument('--build-dir', default=os.environ.get('HALYARD_BUILD_DIR'))
    args, rest = ap.parse_known_args(argv)
    args.source_root = os.path.abspath(args.source_root)
    args.work_dir = os.path.abspath(args.work_dir or os.path.join(args.source_root, 'build-systest'))
    return args, rest


class HalyardTargetTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.t_start = time.monotonic()
        cls.timings = {}
        cls.c = None
        cls.lock = container.WorkDirLock(ARGS.work_dir).acquire()
        cls.addClassCleanup(cls.lock.release)
        cls.addClassCleanup(cls._teardown)

        t = time.monotonic()
        cls.stage = ARGS.stage or container.stage_install(ARGS.source_root, ARGS.work_dir,
                                                          reuse_build=ARGS.build_dir)
        cls.timings['stage'] = time.monotonic() - t
        cls.has_testd = os.access(os.path.join(cls.stage, TESTD.lstrip('/')), os.X_OK)
        cls.has_ctl = os.access(os.path.join(cls.stage, HALYARDCTL.lstrip('/')), os.X_OK)

        cls.c = container.Container(cls.stage, log_dir=ARGS.work_dir)
        cls.c.start()
        cls.timings['boot'] = cls.c.boot_seconds

        t = time.monotonic()
        c = cls.c
        c.write_file('/etc/halyard/halyard.conf', CONFIG, mode=0o644)
        c.run('install', '-d', '-m', '0700', '/etc/credstore', check=True)
        c.write_file('/etc/credstore/test-secret', SECRET, mode=0o600)
        # halyard-smtpd's credentials: a TLS certificate and the password file.
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                            '-nodes', '-days', '2', '-subj', '/CN=smtpd.sys.test', '-keyout', d + '/k',
                            '-out', d + '/c'], check=True, capture_output=True)
            c.write_file('/etc/credstore/smtpd-tls.crt', open(d + '/c').read(), mode=0o600)
            c.write_file('/etc/credstore/smtpd-tls.key', open(d + '/k').read(), mode=0o600)
        hash_ = subprocess.run(['openssl', 'passwd', '-6', 'alice secret'], check=True, capture_output=True,
                               text=True).stdout.strip()
        c.write_file('/etc/credstore/smtpd-passwd', 'alice:%s\n' % hash_, mode=0o600)
        c.setup_snippets(reload=False)  # enable below reloads
        cls.before = (c.systemctl('is-enabled', 'halyard.target').stdout.strip(),
                      c.systemctl('is-active', 'halyard.target', SOCKET).stdout.split())
        cls.enable = c.systemctl('enable', '--now', 'halyard.target', timeout=60)
        cls.timings['setup'] = time.monotonic() - t
        cls.t_tests = time.monotonic()

    @classmethod
    def _teardown(cls):
        if cls.c is None:
            return
        cls.timings['tests'] = time.monotonic() - getattr(cls, 't_tests', time.monotonic())
        name = cls.c.name
        if cls.c.pid is not None and not cls.c._stopped:
            # Keep the halyard part of the journal next to the nspawn log.
            try:
                r = cls.c.run('journalctl', '--no-pager', '-o', 'short-monotonic',
                              '-u', 'halyard*', timeout=10)
                with open(os.path.join(ARGS.work_dir, '%s.journal.txt' % name), 'w') as f:
                    f.write(r.stdout)
            except Exception as e:
                print('journal dump failed:', e, file=sys.stderr)
        cls.c.stop()
        cls.timings['teardown'] = cls.c.stop_seconds or 0.0
        cls.timings['total'] = time.monotonic() - cls.t_start
        print('\ntimings: ' + ', '.join('%s %.2f s' % kv for kv in cls.timings.items()),
              file=sys.stderr, flush=True)
        left = container.leftovers(name)
        if left:
            raise AssertionError('container %s left behind:\n%s' % (name, '\n'.join(left)))

    # -- helpers -------------------------------------------------------------

    def sctl(self, *args, **kw):
        return self.c.systemctl(*args, **kw)

    def is_active(self, unit):
        return self.sctl('is-active', unit).stdout.strip()

    def prop(self, unit, name):
        return self.c.unit_property(unit, name)

    def status(self):
        reply = self.c.varlink_call(ADDRESS, 'io.halyard.Test.GetStatus')
        self.assertNotIn('error', reply, reply)
        return reply.get('parameters') or {}

    def proc_status(self, pid):
        fields = {}
        for line in self.c.read_file('/proc/%d/status' % pid).splitlines():
            k, _, v = line.partition(':')
            fields[k] = v.strip()
        return fields

    # -- tests -----------------------------------------------------------------

    def test_01_target(self):
        # The harness's preset keeps halyard disabled at boot (see container.py).
        self.assertEqual(self.before, ('disabled', ['inactive', 'inactive']))
        e = self.enable
        self.assertEqual(e.rc, 0, 'enable --now halyard.target:\n%s%s' % (e.stdout, e.stderr))
        self.assertEqual(self.sctl('is-enabled', 'halyard.target').stdout.strip(), 'enabled')
        self.assertEqual(self.sctl('is-active', 'halyard.target', SOCKET).stdout.split(),
                         ['active', 'active'])
        self.assertIn(SOCKET, self.prop('halyard.target', 'Wants').split())
        self.assertEqual(self.c.run('stat', '-c', '%a %U %G', '/run/halyard', check=True).stdout.strip(),
                         '755 root root')
        self.assertEqual(self.c.run('stat', '-c', '%F %a', SOCKET_PATH, check=True).stdout.strip(),
                         'socket 666')
        self.assertEqual(self.c.run('readlink', '/run/varlink/registry/io.halyard.Test',
                                    check=True).stdout.strip(), SOCKET_PATH)
        # Nothing connected yet: socket activation has not started it.
        self.assertEqual(self.is_active(SERVICE), 'inactive')

    def test_02_transient_unit(self):
        r = self.c.run('systemd-run', '--wait', '--collect', '--pipe', '--quiet',
                       '-p', 'DynamicUser=yes', '-p', 'PrivateNetwork=yes',
                       '/usr/bin/id', '-u', timeout=30)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertNotEqual(int(r.stdout.strip()), 0)

    def test_03_testd(self):
        if not self.has_testd:
            self.skipTest('%s not in the staged install (built only with -Dinstall_tests=true)' % TESTD)
        c = self.c

        # Socket activation by a varlink call.
        self.assertEqual(self.is_active(SERVICE), 'inactive')
        reply = c.varlink_call(ADDRESS, 'org.varlink.service.GetInfo', timeout=20)
        self.assertNotIn('error', reply, reply)
        info = reply['parameters']
        self.assertIn('io.halyard.Test', info['interfaces'])
        self.assertIn('org.varlink.service', info['interfaces'])
        self.assertEqual(self.is_active(SERVICE), 'active')
        if self.has_ctl:
            r = c.run(HALYARDCTL, 'info', ADDRESS, timeout=20)
            self.assertEqual(r.rc, 0, r.stderr)
            self.assertIn('io.halyard.Test', r.stdout)
        pid = int(self.prop(SERVICE, 'MainPID'))
        self.assertGreater(pid, 0)

        # sd_notify STATUS=, journal entries from PID 1 and from the daemon.
        c.wait_for(lambda: self.prop(SERVICE, 'StatusText'), what='StatusText')
        def journal_has_start():
            j = c.run('journalctl', '--no-pager', '-o', 'cat', '-u', SERVICE).stdout
            return re.search(r'^Started halyard-testd\.service', j, re.M)
        c.wait_for(journal_has_start, timeout=10, what='"Started" entry in journalctl -u')
        c.wait_for(lambda: c.run('journalctl', '--no-pager', '-o', 'cat', '_SYSTEMD_UNIT=' + SERVICE,
                                 'HALYARD_SERVICE=testd').stdout.strip(),
                   timeout=10, what="the daemon's own HALYARD_SERVICE=testd journal entry")

        # Structured events: journalctl finds an entry by queue id, with its
        # fixed MESSAGE_ID, and by that MESSAGE_ID.
        reply = c.varlink_call(ADDRESS, 'io.halyard.Test.Log',
                               {'queueId': 'QSYSTEST1', 'message': 'accepted for the system test'})
        self.assertNotIn('error', reply, reply)
        def queue_entry():
            out = c.run('journalctl', '--no-pager', '-o', 'json', 'HALYARD_QUEUE_ID=QSYSTEST1').stdout
            return [json.loads(l) for l in out.splitlines() if l.strip()]
        c.wait_for(queue_entry, timeout=10, what='journal entry with HALYARD_QUEUE_ID=QSYSTEST1')
        entry = queue_entry()[0]
        self.assertEqual(entry['MESSAGE_ID'], '7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a50')
        self.assertEqual(entry['PRIORITY'], '6')
        self.assertEqual(entry['SYSLOG_IDENTIFIER'], 'halyard-testd')
        self.assertEqual(entry['_SYSTEMD_UNIT'], SERVICE)
        self.assertIn('accepted for the system test', entry['MESSAGE'])
        by_id = c.run('journalctl', '--no-pager', '-o', 'cat',
                      'MESSAGE_ID=7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a50').stdout
        self.assertIn('QSYSTEST1', by_id)

        # Credential, config, state directory, as the daemon reports them.
        st = self.status()
        self.assertEqual(st['greeting'], 'hello from the system test')
        self.assertTrue(st['secretLoaded'], st)
        self.assertEqual(st['stateDirectory'], '/var/lib/halyard-test')
        self.assertEqual(c.run('test', '-f', '/run/credentials/%s/test-secret' % SERVICE).rc, 0)

        # The sandbox took effect.
        ps = self.proc_status(pid)
        self.assertNotEqual(ps['Uid'].split()[0], '0', ps['Uid'])
        for cap in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):
            self.assertEqual(int(ps[cap], 16), 0, '%s=%s' % (cap, ps[cap]))
        self.assertEqual(ps['NoNewPrivs'], '1')
        self.assertEqual(ps['Seccomp'], '2')

        # Reload: a good config is applied, in the same process.
        c.write_file('/etc/halyard/halyard.conf', CONFIG_RELOADED, mode=0o644)
        r = self.sctl('reload', SERVICE, timeout=60)
        self.assertEqual(r.rc, 0, r.stderr)
        c.wait_for(lambda: self.status()['greeting'] == 'reloaded', timeout=10, what='reloaded greeting')
        self.assertEqual(int(self.prop(SERVICE, 'MainPID')), pid)

        # A bad config is refused by ExecReload=--check; the old one stays.
        c.write_file('/etc/halyard/halyard.conf', CONFIG_BAD, mode=0o644)
        r = self.sctl('reload', SERVICE, timeout=60)
        self.assertNotEqual(r.rc, 0, 'reload with a bad config succeeded')
        self.assertEqual(self.is_active(SERVICE), 'active')
        self.assertEqual(int(self.prop(SERVICE, 'MainPID')), pid)
        self.assertEqual(self.status()['greeting'], 'reloaded')
        c.write_file('/etc/halyard/halyard.conf', CONFIG_RELOADED, mode=0o644)

        # Stop: clean exit (SIGTERM drains), the socket stays and re-activates.
        r = self.sctl('stop', SERVICE, timeout=60)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual(self.is_active(SERVICE), 'inactive')
        self.assertEqual(self.prop(SERVICE, 'Result'), 'success')
        self.assertEqual(self.is_active(SOCKET), 'active')
        self.assertEqual(c.run('test', '-S', SOCKET_PATH).rc, 0, 'socket node gone after stop')
        reply = c.varlink_call(ADDRESS, 'io.halyard.Test.Ping', timeout=20)
        self.assertNotIn('error', reply, reply)
        self.assertEqual(self.is_active(SERVICE), 'active')
        self.assertNotEqual(int(self.prop(SERVICE, 'MainPID')), pid)

    def test_04_queued_delivers_and_journals(self):
        """halyard-queued runs from boot (halyard.target wants it), takes a
        message over varlink with its content as an fd, delivers it to a
        receiver in the container, and the journal tells the story by queue
        id with the structured fields."""
        c = self.c
        c.wait_for(lambda: self.is_active('halyard-queued.service') == 'active', timeout=20,
                   what='halyard-queued.service started with the target')
        c.write_file('/run/sink.py', SINK, mode=0o644)
        c.run('systemd-run', '--unit=halyard-test-sink', '/usr/bin/python3', '/run/sink.py', check=True, timeout=30)
        c.wait_for(lambda: c.run('test', '-e', '/run/sink.ready').rc == 0, timeout=20, what='the sink')
        r = c.run('/usr/bin/python3', '-c', ENQUEUE, timeout=30)
        self.assertEqual(r.rc, 0, r.stderr)
        reply = json.loads(r.stdout)
        self.assertNotIn('error', reply, reply)
        qid = reply['parameters']['queueId']
        c.wait_for(lambda: 'Subject: system test' in c.run('cat', '/run/sink.txt').stdout, timeout=30,
                   what='the message at the receiver')
        def entries():
            out = c.run('journalctl', '--no-pager', '-o', 'json', 'HALYARD_QUEUE_ID=' + qid).stdout
            return [json.loads(l) for l in out.splitlines() if l.strip()]
        c.wait_for(lambda: any(e.get('MESSAGE_ID') == '7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a51' for e in entries()),
                   timeout=20, what='the delivered entry')
        ids = {e['MESSAGE_ID'] for e in entries()}
        self.assertIn('7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a50', ids)  # accepted
        delivered = [e for e in entries() if e['MESSAGE_ID'] == '7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a51'][0]
        self.assertEqual(delivered['HALYARD_RCPT'], 'user@sys.test')
        self.assertEqual(delivered['HALYARD_RELAY'], '127.0.0.1[127.0.0.1]:2526')
        self.assertEqual(delivered['HALYARD_DSN_STATUS'], '2.0.0')
        self.assertEqual(delivered['_SYSTEMD_UNIT'], 'halyard-queued.service')
        self.assertIn('HALYARD_DELAY', delivered)
        if self.has_ctl:
            r = c.run(HALYARDCTL, 'status', timeout=30)
            self.assertRegex(r.stdout, r'queued\s+running\s+0 active, 0 deferred, 0 held')
            r = c.run(HALYARDCTL, 'queue', 'list', timeout=30)
            self.assertEqual(r.rc, 0, r.stderr)
            self.assertIn('-- 0 messages', r.stdout)
        # The spool lives in the state directory, owned by the dynamic user.
        self.assertEqual(c.run('test', '-d', '/var/lib/private/halyard-queued/spool/msg').rc, 0)

    def test_05_smtpd_to_queue_to_receiver(self):
        """halyard-smtpd, socket-activated on port 25 under systemd and
        sandboxed (no network of its own), takes a message from smtplib and
        hands it to the queue, which delivers it."""
        c = self.c
        c.wait_for(lambda: c.run('test', '-e', '/run/sink.ready').rc == 0, timeout=20, what='the sink from test_04')
        r = c.run('/usr/bin/python3', '-c', SMTP_SEND, timeout=60)
        self.assertEqual(r.rc, 0, r.stdout + r.stderr)
        self.assertIn('250', r.stdout)
        c.wait_for(lambda: 'Subject: through smtpd' in c.run('cat', '/run/sink.txt').stdout, timeout=30,
                   what='the message at the receiver')
        got = c.run('cat', '/run/sink.txt').stdout
        self.assertIn('by smtpd.sys.test', got)
        self.assertEqual(self.is_active('halyard-smtpd.service'), 'active')
        out = c.run('journalctl', '--no-pager', '-o', 'json', '_SYSTEMD_UNIT=halyard-smtpd.service',
                    'MESSAGE_ID=7c1e0b5a3d2f4e6c8a9b0c1d2e3f4a50').stdout
        entries = [json.loads(l) for l in out.splitlines() if l.strip()]
        self.assertTrue(entries, 'no accepted entry from halyard-smtpd')
        self.assertEqual(entries[-1]['HALYARD_CLIENT_IP'], '127.0.0.1')
        self.assertIn('HALYARD_QUEUE_ID', entries[-1])

    def test_05b_submission_auth(self):
        """Submission on 587 under systemd: MAIL needs AUTH (530), AUTH PLAIN
        after STARTTLS against the password file credential, then the
        message reaches the receiver; the journal names the user."""
        c = self.c
        c.wait_for(lambda: c.run('test', '-e', '/run/sink.ready').rc == 0, timeout=20, what='the sink from test_04')
        r = c.run('/usr/bin/python3', '-c', SUBMIT, timeout=60)
        self.assertEqual(r.rc, 0, r.stdout + r.stderr)
        self.assertIn('before auth 530', r.stdout)
        self.assertIn('sent', r.stdout)
        c.wait_for(lambda: 'Subject: via submission' in c.run('cat', '/run/sink.txt').stdout, timeout=30,
                   what='the submitted message at the receiver')
        self.assertIn('with ESMTPSA', c.run('cat', '/run/sink.txt').stdout)
        out = c.run('journalctl', '--no-pager', '-o', 'json', '_SYSTEMD_UNIT=halyard-smtpd.service',
                    'HALYARD_AUTH_USER=alice').stdout
        self.assertTrue([l for l in out.splitlines() if l.strip()], 'no journal entry with HALYARD_AUTH_USER=alice')

    def test_05c_smtpd_policy(self):
        """halyard-smtpd with a policy under systemd: `systemctl reload`
        loads it (checked first by ExecReload=), the sandboxed service reads
        it from /etc/halyard and applies it; a broken one is refused by the
        reload and the running one keeps serving."""
        c = self.c
        c.write_file(POLICY_FILE, POLICY_TEXT, mode=0o644)
        c.write_file(POLICY_DROPIN, '[Smtpd]\nPolicy=%s\n' % POLICY_FILE, mode=0o644)
        self.addCleanup(lambda: c.run('rm', '-f', POLICY_DROPIN, POLICY_FILE))
        if self.is_active('halyard-smtpd.service') == 'active':
            r = self.sctl('reload', 'halyard-smtpd.service', timeout=60)
            self.assertEqual(r.rc, 0, r.stderr)
        r = c.run('/usr/bin/python3', '-c', POLICY_SEND, timeout=60)
        self.assertEqual(r.rc, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.split('\n')[0], "550 b'5.7.1 No HELO like that here'")
        self.assertEqual(r.stdout.split('\n')[1], '250')
        # A broken policy: the reload fails, the old policy stays.
        c.write_file(POLICY_FILE, 'on helo {\n    Reject(\n}\n', mode=0o644)
        r = self.sctl('reload', 'halyard-smtpd.service', timeout=60)
        self.assertNotEqual(r.rc, 0)
        self.assertEqual(self.is_active('halyard-smtpd.service'), 'active')
        out = c.run('journalctl', '--no-pager', '-u', 'halyard-smtpd.service').stdout
        self.assertIn('%s:3:1: error:' % POLICY_FILE, out)
        r = c.run('/usr/bin/python3', '-c', POLICY_SEND, timeout=60)
        self.assertTrue(r.stdout.startswith('550 '), r.stdout + r.stderr)

    def test_05d_smtpd_authenticates_through_arcd(self):
        """halyard-smtpd with Authenticate=yes under systemd: its sandbox
        reaches arcd's 0660 group-halyard socket, which socket-activates
        halyard-arcd (sandboxed, dynamic user); the message arrives with our
        Authentication-Results and without the forged one the client added."""
        c = self.c
        if not os.access(os.path.join(self.stage, 'usr/libexec/halyard/halyard-arcd'), os.X_OK):
            self.skipTest('halyard-arcd not in the staged install')
        c.wait_for(lambda: c.run('test', '-e', '/run/sink.ready').rc == 0, timeout=20, what='the sink from test_04')
        c.write_file(ARC_DROPIN, '[Smtpd]\nAuthenticate=yes\nAuthservId=smtpd.sys.test\n', mode=0o644)
        self.addCleanup(lambda: c.run('rm', '-f', ARC_DROPIN))
        if self.is_active('halyard-smtpd.service') == 'active':
            r = self.sctl('reload', 'halyard-smtpd.service', timeout=60)
            self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual(c.run('stat', '-c', '%F %a %G', '/run/halyard/io.halyard.Arc', check=True).stdout.strip(),
                         'socket 660 halyard')
        r = c.run('/usr/bin/python3', '-c', ARC_SEND, timeout=60)
        self.assertEqual(r.rc, 0, r.stdout + r.stderr)
        c.wait_for(lambda: 'Subject: authenticated' in c.run('cat', '/run/sink.txt').stdout, timeout=30,
                   what='the message at the receiver')
        got = c.run('cat', '/run/sink.txt').stdout
        # Only this message went through Authenticate: one A-R, ours.
        self.assertEqual(got.count('Authentication-Results: smtpd.sys.test;'), 1, got)
        self.assertNotIn('forged', got)
        self.assertEqual(self.is_active('halyard-arcd.service'), 'active')
        pid = int(self.prop('halyard-arcd.service', 'MainPID'))
        ps = self.proc_status(pid)
        self.assertNotEqual(ps['Uid'].split()[0], '0')
        self.assertEqual(ps['CapEff'], '0000000000000000')
        reply = c.varlink_call('unix:/run/halyard/io.halyard.Arc', 'io.halyard.Arc.GetStatus', timeout=20)
        calls = {m['method']: m['calls'] for m in reply['parameters']['methods']}
        self.assertGreaterEqual(calls.get('Authenticate', 0), 1, reply)

    def test_06_stop_start_target(self):
        # PartOf=halyard.target on the sockets: stopping the target stops
        # them, and Requires= stops their services; starting it again brings
        # the sockets back (services wait for a client).
        r = self.sctl('stop', 'halyard.target', timeout=60)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual(self.sctl('is-active', 'halyard.target', SOCKET, SERVICE).stdout.split(),
                         ['inactive'] * 3)
        if self.has_testd:
            self.assertIn(self.prop(SERVICE, 'Result'), ('success',))
        r = self.sctl('start', 'halyard.target', timeout=60)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertEqual(self.sctl('is-active', 'halyard.target', SOCKET).stdout.split(),
                         ['active', 'active'])
        self.assertEqual(self.is_active(SERVICE), 'inactive')


    def test_tlsrptd_timer(self):
        """halyard-tlsrptd under the real systemd: the target enables its
        socket and its daily timer; Records socket-activate it (sandboxed,
        dynamic user, state directory); making the timer fire now runs
        halyard-tlsrptd-report.service (halyardctl tlsrpt send, itself
        sandboxed without network, reaching the 0660 socket through the
        halyard group), which builds yesterday's report; the journal shows
        it and the day is closed."""
        c = self.c
        if not os.access(os.path.join(self.stage, 'usr/libexec/halyard/halyard-tlsrptd'), os.X_OK) or not self.has_ctl:
            self.skipTest('halyard-tlsrptd or halyardctl not in the staged install')
        c.wait_for(lambda: self.sctl('is-active', 'halyard.target').stdout.strip() == 'active', timeout=30,
                   what='halyard.target (test_06 restarts it)')
        c.write_file(TLSRPT_DROPIN, TLSRPT_CONFIG, mode=0o644)
        self.addCleanup(lambda: c.run('rm', '-f', TLSRPT_DROPIN, TLSRPT_TIMER_NOW))
        wants = self.prop('halyard.target', 'Wants').split()
        self.assertIn('halyard-tlsrptd.socket', wants)
        self.assertIn('halyard-tlsrptd.timer', wants)
        self.assertEqual(self.sctl('is-active', 'halyard-tlsrptd.socket', 'halyard-tlsrptd.timer').stdout.split(),
                         ['active', 'active'])
        self.assertEqual(self.prop('halyard-tlsrptd.timer', 'Unit'), 'halyard-tlsrptd-report.service')
        self.assertTrue(self.prop('halyard-tlsrptd.timer', 'NextElapseUSecRealtime'))
        self.assertEqual(c.run('stat', '-c', '%F %a %G', '/run/halyard/io.halyard.TlsRpt', check=True).stdout.strip(),
                         'socket 660 halyard')
        # A restart picks up the drop-in if an earlier test started it.
        self.sctl('stop', 'halyard-tlsrptd.service', timeout=30)

        r = c.run('/usr/bin/python3', '-c', TLSRPT_FEED, timeout=30)
        self.assertEqual(r.rc, 0, r.stderr)
        st = json.loads(r.stdout)['parameters']
        yesterday = time.strftime('%Y-%m-%d', time.gmtime(time.time() // 86400 * 86400 - 43200))
        self.assertEqual(st['daysPending'], [yesterday])
        self.assertEqual(self.is_active('halyard-tlsrptd.service'), 'active')
        pid = int(self.prop('halyard-tlsrptd.service', 'MainPID'))
        ps = self.proc_status(pid)
        self.assertNotEqual(ps['Uid'].split()[0], '0')
        self.assertEqual(ps['CapEff'], '0000000000000000')
        self.assertEqual(ps['NoNewPrivs'], '1')
        c.wait_for(lambda: c.run('sh', '-c', 'ls /var/lib/private/halyard-tlsrptd/results/*.log').rc == 0,
                   timeout=10, what='the results journal in the state directory')

        # Fire the timer now (what 00:10 UTC + RandomizedDelaySec would do).
        c.write_file(TLSRPT_TIMER_NOW, '[Timer]\nOnCalendar=\nOnActiveSec=1s\nRandomizedDelaySec=0\nPersistent=false\n',
                     mode=0o644)
        self.sctl('daemon-reload', check=True, timeout=60)
        before = self.prop('halyard-tlsrptd-report.service', 'InvocationID')
        self.sctl('restart', 'halyard-tlsrptd.timer', check=True, timeout=30)
        c.wait_for(lambda: self.prop('halyard-tlsrptd-report.service', 'InvocationID') != before
                   and self.is_active('halyard-tlsrptd-report.service') in ('inactive', 'failed'),
                   timeout=60, interval=0.5, what='halyard-tlsrptd-report.service to run and finish')
        self.assertEqual(self.prop('halyard-tlsrptd-report.service', 'Result'), 'success',
                         c.run('journalctl', '--no-pager', '-u', 'halyard-tlsrptd-report.service').stdout)
        self.assertIn('halyard-tlsrptd-report.service', self.prop('halyard-tlsrptd.timer', 'Triggers'))

        reply = c.varlink_call(TLSRPT_ADDRESS, 'io.halyard.TlsRpt.ListReports', timeout=20)
        reports = reply['parameters']['reports']
        self.assertEqual([(x['policyDomain'], x['day']) for x in reports], [('rpt.sys.test', yesterday)])
        # sys.test publishes no _smtp._tls record (see TLSRPT_CONFIG).
        self.assertEqual((reports[0]['result'], reports[0].get('detail')), ('noRecord', 'no TLSRPT record'), reports[0])
        out = c.run('journalctl', '--no-pager', '-o', 'json', '_SYSTEMD_UNIT=halyard-tlsrptd.service',
                    'MESSAGE_ID=5b0c8e7d2a1f4c3e9d8b7a6f5e4d3c23').stdout
        entries = [json.loads(l) for l in out.splitlines() if l.strip()]
        self.assertEqual([(e['HALYARD_TLSRPT_DOMAIN'], e['HALYARD_TLSRPT_REPORT_ID']) for e in entries],
                         [('rpt.sys.test', reports[0]['reportId'])])
        st = c.varlink_call(TLSRPT_ADDRESS, 'io.halyard.TlsRpt.GetStatus', timeout=20)['parameters']
        self.assertEqual(st['daysPending'], [])
        out = c.run('journalctl', '--no-pager', '-u', 'halyard-tlsrptd-report.service').stdout
        self.assertIn(reports[0]['reportId'], out)  # halyardctl's listing
        c.wait_for(lambda: 'Built 1 TLS reports for %s' % yesterday in c.run(
            'journalctl', '--no-pager', '-u', 'halyard-tlsrptd.service').stdout, timeout=10, what='the journal entry')
        r = c.run(HALYARDCTL, 'tlsrpt', 'reports', timeout=30)
        self.assertEqual(r.rc, 0, r.stderr)
        self.assertIn('rpt.sys.test', r.stdout)

    def test_tlsrptd_timer_then_signed_report(self):
        """halyard-tlsrptd's report mail DKIM-signed by halyard-arcd under the
        real systemd: from its sandbox (dynamic user, PrivateUsers=yes,
        ProtectSystem=strict) tlsrptd reaches the 0660 group-halyard arcd
        socket, which socket-activates arcd with its key as a credential;
        the signed report goes through halyard-queued to the receiver, and
        dkimpy verifies it on the host."""
        c = self.c
        for b in ('halyard-tlsrptd', 'halyard-arcd', 'halyard-queued'):
            if not os.access(os.path.join(self.stage, 'usr/libexec/halyard', b), os.X_OK):
                self.skipTest('%s not in the staged install' % b)
        import base64
        import dkim
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        key = ed25519.Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        dkim_txt = 'v=DKIM1; k=ed25519; p=' + base64.b64encode(pub).decode()
        c.write_file('/etc/credstore/tlsrpt-systest-dkim.pem', key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
            mode=0o600)
        arcd_dropin = '/run/systemd/system/halyard-arcd.service.d/50-tlsrpt-systest.conf'
        c.write_file(arcd_dropin, '[Service]\nLoadCredential=dkim:/etc/credstore/tlsrpt-systest-dkim.pem\n', mode=0o644)
        # _smtp._tls.rpt-sign.sys.test from a small DNS server on loopback.
        c.write_file('/run/tlsrpt-dns.py', TLSRPT_DNS, mode=0o644)
        c.run('systemd-run', '--unit=halyard-test-dns', '/usr/bin/python3', '/run/tlsrpt-dns.py', check=True,
              timeout=30)
        c.wait_for(lambda: c.run('test', '-e', '/run/tlsrpt-dns.ready').rc == 0, timeout=20, what='the DNS server')
        c.write_file(TLSRPT_SIGN_DROPIN, TLSRPT_SIGN_CONFIG, mode=0o644)

        def cleanup():
            c.run('rm', '-f', TLSRPT_SIGN_DROPIN, arcd_dropin, '/etc/credstore/tlsrpt-systest-dkim.pem')
            c.run('systemctl', 'stop', 'halyard-test-dns.service', 'halyard-tlsrptd.service', 'halyard-arcd.service')
            c.run('systemctl', 'daemon-reload', timeout=60)
        self.addCleanup(cleanup)
        self.sctl('daemon-reload', check=True, timeout=60)
        # Both start again on the next connection, with this configuration.
        self.sctl('stop', 'halyard-tlsrptd.service', 'halyard-arcd.service', timeout=30)
        if c.run('test', '-e', '/run/sink.ready').rc != 0:
            c.write_file('/run/sink.py', SINK, mode=0o644)
            c.run('systemd-run', '--unit=halyard-test-sink', '/usr/bin/python3', '/run/sink.py', check=True, timeout=30)
            c.wait_for(lambda: c.run('test', '-e', '/run/sink.ready').rc == 0, timeout=20, what='the sink')
        self.assertEqual(c.run('stat', '-c', '%F %a %G', '/run/halyard/io.halyard.Arc', check=True).stdout.strip(),
                         'socket 660 halyard')

        feed = TLSRPT_FEED.replace("'rpt.sys.test'", "'rpt-sign.sys.test'").replace("'time': y,", "")
        r = c.run('/usr/bin/python3', '-c', feed, timeout=30)
        self.assertEqual(r.rc, 0, r.stderr)
        today = time.strftime('%Y-%m-%d', time.gmtime())
        reply = c.varlink_call(TLSRPT_ADDRESS, 'io.halyard.TlsRpt.SendReports', {'day': today}, timeout=60)
        reports = reply['parameters']['reports']
        journal = lambda: c.run('journalctl', '--no-pager', '-u', 'halyard-tlsrptd.service', '-u',  # noqa: E731
                                'halyard-arcd.service').stdout[-4000:]
        # (Earlier tests' deliveries today make a noRecord report for sys.test.)
        mine = [x for x in reports if x['policyDomain'] == 'rpt-sign.sys.test']
        self.assertEqual(len(mine), 1, reply)
        rep = mine[0]
        self.assertEqual((rep['result'], [(d['uri'], d['status']) for d in rep['destinations']]),
                         ('sent', [('mailto:tlsrpt@sys.test', 'enqueued')]), (rep, journal()))
        self.assertEqual(self.is_active('halyard-arcd.service'), 'active')
        def sink():
            # run() decodes without newline translation: the CRLFs are kept.
            out = c.run('cat', '/run/sink.txt').stdout.encode()
            return rep['reportId'].encode() in out and out
        raw = c.wait_for(sink, timeout=30, what='the signed report at the receiver')
        at = raw.rfind(b'DKIM-Signature: ', 0, raw.index(rep['reportId'].encode()))
        self.assertGreaterEqual(at, 0, raw[-3000:])
        msg = raw[at:]
        self.assertIn(b'd=mta.sys.test', msg[:400])
        self.assertIn(b's=tlsrpt', msg[:400])

        def dnsfunc(name, timeout=5):
            name = name.decode() if isinstance(name, bytes) else name
            return dkim_txt.encode() if name.rstrip('.') == 'tlsrpt._domainkey.mta.sys.test' else None
        self.assertTrue(dkim.verify(msg, dnsfunc=dnsfunc), msg[:2000])
        # The report mail made no TLS result (today is closed: it would be refused).
        st = c.varlink_call(TLSRPT_ADDRESS, 'io.halyard.TlsRpt.GetStatus', timeout=20)['parameters']
        self.assertEqual(st['recordsRefused'], 0, st)


def main():
    global ARGS
    ARGS, rest = parse_args(sys.argv[1:])
    if os.geteuid() != 0:
        print('SKIP: needs root (systemd-nspawn)')
        return 77
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    res = prog.result
    if not res.wasSuccessful():
        return 1
    if res.testsRun and len(res.skipped) == res.testsRun:
        return 77
    return 0


if __name__ == '__main__':
    sys.exit(main())
