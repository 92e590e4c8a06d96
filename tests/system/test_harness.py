#!/usr/bin/python3
"""Self-test of container.py: boots and tears down repeatedly and leaves
nothing behind. Needs no halyard build (the host's /usr only).

Run (as root): /usr/bin/python3 tests/system/test_harness.py [--work-dir DIR] [-v]
Exit status: 0 pass, 1 fail, 77 not root.
"""

import argparse
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import container  # noqa: E402

WORK_DIR = None
BOOTS = 3


class HarnessTest(unittest.TestCase):

    def test_boot_teardown_repeated(self):
        times = []
        for i in range(BOOTS):
            t0 = time.monotonic()
            c = container.Container(log_dir=WORK_DIR)
            with c:
                self.assertIn(c.state, ('running', 'degraded'))
                self.assertEqual(c.run('cat', '/proc/1/comm', check=True).stdout.strip(), 'systemd')
                # A throwaway unit, sandboxed like ours.
                r = c.run('systemd-run', '--wait', '--collect', '--pipe', '--quiet',
                          '-p', 'DynamicUser=yes', '-p', 'PrivateNetwork=yes', '/usr/bin/id', '-u')
                self.assertEqual(r.rc, 0, r.stderr)
                self.assertNotEqual(r.stdout.strip(), '0')
                c.write_file('/etc/halyard/t.conf', 'x=1\n', mode=0o640)
                self.assertEqual(c.read_file('/etc/halyard/t.conf'), 'x=1\n')
                self.assertEqual(c.run('stat', '-c', '%a', '/etc/halyard', '/etc/halyard/t.conf').stdout.split(),
                                 ['755', '640'])
                # A command that overruns its timeout is killed, and does not
                # leave a zombie that would hold the container's shutdown.
                r = c.run('sleep', '30', timeout=0.5)
                self.assertEqual(r.rc, -9)
                # Nothing of the container is visible on the host.
                self.assertFalse(os.path.exists('/etc/halyard/t.conf'))
            self.assertEqual(container.leftovers(c.name), [])
            self.assertFalse(os.path.exists(os.path.join(WORK_DIR, c.name + '.usr')))
            self.assertLess(c.stop_seconds, 5.0, 'teardown took %.2f s' % c.stop_seconds)
            times.append((c.boot_seconds, c.stop_seconds, time.monotonic() - t0))
        for i, (b, s, t) in enumerate(times, 1):
            print('\nrun %d: boot %.2f s, teardown %.2f s, total %.2f s' % (i, b, s, t),
                  file=sys.stderr, end='')
        print(file=sys.stderr)

    def test_boot_timeout_cleans_up(self):
        c = container.Container(log_dir=WORK_DIR, boot_timeout=0.3)
        t0 = time.monotonic()
        with self.assertRaises(container.HarnessError):
            c.start()
        self.assertLess(time.monotonic() - t0, 20)
        self.assertEqual(container.leftovers(c.name), [])
        with self.assertRaises(container.HarnessError):
            c.run('true')

    def test_bad_stage_cleans_up(self):
        with tempfile.TemporaryDirectory() as empty:
            c = container.Container(stage=empty, log_dir=WORK_DIR)
            with self.assertRaises(container.HarnessError):
                c.start()
            self.assertIsNone(c.proc)
            self.assertEqual(container.leftovers(c.name), [])


def main():
    global WORK_DIR
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument('--work-dir', default=os.environ.get('HALYARD_SYSTEST_DIR') or
                    os.path.join(os.path.dirname(os.path.dirname(here)), 'build-systest'))
    args, rest = ap.parse_known_args()
    WORK_DIR = os.path.abspath(args.work_dir)
    if os.geteuid() != 0:
        print('SKIP: needs root (systemd-nspawn)')
        return 77
    os.makedirs(WORK_DIR, exist_ok=True)
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == '__main__':
    sys.exit(main())
