#!/usr/bin/python3
"""Static checks of halyard's systemd units (no container, no root needed).

For every unit in units/ and tests/system/units/:
  0. halyard's own rules: no RuntimeDirectory=halyard, every halyard-*.socket
     and .timer has PartOf=halyard.target and [Install] WantedBy=halyard.target;
  1. `systemd-analyze verify --recursive-errors=one` -- any warning or error
     (unknown key, bad value, missing dependency, missing executable, missing
     man page in Documentation=) fails;
  2. for every .service, `systemd-analyze security --offline=true`, printing
     the score and failing above the limit (1.2, see DESIGN.md).

Why a temporary copy: on systemd 252, `verify` refuses a unit whose
ExecStart=/ExecReload=... binary does not exist ("Command ... is not
executable"), and `--root=DIR` does not help: it then also looks for
sysinit.target, sockets.target, ... under DIR and fails on those. So the
units are copied into one temporary directory (verify adds the directory of
each file it is given to the unit search path, so Requires=/WantedBy=
between our units resolve) and every Exec*= path that is not on this host is
rewritten: to the same path under --stage DIR when a staged install
(`meson install --destdir DIR`) has it, else to /bin/true. The security
score does not depend on the executable, so it is taken from the original
files.

Usage: check-units.py [--source-root DIR] [--stage DIR] [--limit 1.2]
Exit status: 0 all good, 1 a check failed, 77 systemd-analyze missing.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

UNIT_SUFFIXES = ('.service', '.socket', '.target', '.timer', '.path', '.mount')
EXEC_KEYS = ('ExecStart', 'ExecStartPre', 'ExecStartPost', 'ExecReload',
             'ExecStop', 'ExecStopPost', 'ExecCondition')
SCORE_RE = re.compile(r'Overall exposure level for (\S+): ([0-9]+(?:\.[0-9]+)?)')


def find_units(source_root):
    units = []
    for d in ('units', os.path.join('tests', 'system', 'units')):
        full = os.path.join(source_root, d)
        if not os.path.isdir(full):
            continue
        for name in sorted(os.listdir(full)):
            if name.endswith(UNIT_SUFFIXES):
                units.append(os.path.join(full, name))
    return units


def rewrite_exec(text, stage):
    """Point Exec*= lines whose binary is not on this host at one that is."""
    out = []
    for line in text.splitlines(keepends=True):
        m = re.match(r'^(\s*(?:%s)\s*=\s*)([-@:+!]*)(/\S+)(.*)$'
                     % '|'.join(EXEC_KEYS), line, re.S)
        if m and not os.access(m.group(3), os.X_OK):
            staged = os.path.join(stage, m.group(3).lstrip('/')) if stage else None
            repl = staged if staged and os.access(staged, os.X_OK) else '/bin/true'
            line = m.group(1) + m.group(2) + repl + m.group(4)
        out.append(line)
    return ''.join(out)


def lint(path):
    """halyard's own rules, which systemd-analyze cannot know."""
    name = os.path.basename(path)
    errors = []
    with open(path, encoding='utf-8') as f:
        lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith(('#', ';'))]
    keys = {}
    for l in lines:
        if '=' in l:
            k, v = l.split('=', 1)
            keys.setdefault(k.strip(), []).extend(v.split())
    # Stopping a service with RuntimeDirectory=halyard removes /run/halyard
    # and every socket node in it, while the socket units stay "active".
    for d in keys.get('RuntimeDirectory', []):
        if d == 'halyard' or d.startswith('halyard/'):
            errors.append('%s: RuntimeDirectory=%s would delete the sockets in /run/halyard' % (name, d))
    if name.startswith('halyard-') and name.endswith(('.socket', '.timer')):
        if 'halyard.target' not in keys.get('WantedBy', []):
            errors.append('%s: needs [Install] WantedBy=halyard.target' % name)
        if 'halyard.target' not in keys.get('PartOf', []):
            errors.append('%s: needs PartOf=halyard.target' % name)
    return errors


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--source-root', default=os.path.dirname(os.path.dirname(here)))
    ap.add_argument('--stage', default=os.environ.get('HALYARD_STAGE'),
                    help='staged install (DESTDIR) whose binaries Exec*= may use')
    ap.add_argument('--limit', type=float, default=1.2)
    args = ap.parse_args()
    if args.stage:
        args.stage = os.path.abspath(args.stage)

    analyze = shutil.which('systemd-analyze')
    if not analyze:
        print('SKIP: systemd-analyze not found')
        return 77

    units = find_units(args.source_root)
    if not units:
        print('FAIL: no units found under', args.source_root)
        return 1

    failed = []
    for path in units:
        for e in lint(path):
            print('lint: FAIL', e)
            failed.append(e)

    with tempfile.TemporaryDirectory(prefix='halyard-units-') as tmp:
        copies = []
        for path in units:
            dst = os.path.join(tmp, os.path.basename(path))
            if os.path.exists(dst):
                failed.append('%s: duplicate unit name' % path)
                continue
            with open(path, encoding='utf-8') as f:
                text = f.read()
            with open(dst, 'w', encoding='utf-8') as f:
                f.write(rewrite_exec(text, args.stage))
            copies.append(dst)

        # systemd 252 quirks: without --recursive-errors= a warning (unknown
        # key, bad value) still exits 0; with =no a missing dependency
        # ("Unit halyard-x.socket not found") is not even printed. =one
        # catches both (the named units and their direct dependencies, which
        # are ours or systemd's standard targets). Any output fails too.
        r = subprocess.run([analyze, 'verify', '--recursive-errors=one'] + copies,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        msg = r.stdout.replace(tmp + '/', '')
        if r.returncode != 0 or msg.strip():
            print('verify: FAIL (exit %d)' % r.returncode)
            print(msg.rstrip())
            failed.append('systemd-analyze verify')
        else:
            print('verify: ok (%d units: %s)' % (
                len(copies), ' '.join(os.path.basename(c) for c in copies)))

    for path in units:
        if not path.endswith('.service'):
            continue
        name = os.path.basename(path)
        r = subprocess.run([analyze, 'security', '--offline=true', '--no-pager', path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120, env=dict(os.environ, SYSTEMD_COLORS='0'))
        m = SCORE_RE.search(r.stdout)
        if not m:
            print('security %s: FAIL, no score (exit %d)' % (name, r.returncode))
            print(r.stdout.rstrip())
            failed.append('security ' + name)
            continue
        score = float(m.group(2))
        verdict = 'ok' if score <= args.limit else 'FAIL'
        print('security %s: %.1f (limit %.1f) %s' % (name, score, args.limit, verdict))
        if score > args.limit:
            print('\n'.join(l for l in r.stdout.splitlines() if l.startswith('✗')))
            failed.append('security ' + name)

    if failed:
        print('FAILED:', ', '.join(failed))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
