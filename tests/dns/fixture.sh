#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fixture.sh - a real, DNSSEC-signed DNS on loopback for halyard's DNS tests.
#
#   nsd      authoritative for halyard.test (signed with ldns-signzone, with a
#            deliberately bogus RRset or three) and its unsigned child
#            insecure.halyard.test (delegated without DS)
#   unbound  validating resolver in front of nsd, trust anchor = the zone's DS
#
# Everything lives in one directory, binds 127.0.0.1 only, on free high ports
# picked at start (so parallel runs and other fixtures do not collide).
# `stop` kills exactly the PIDs `start` recorded, after checking that each one
# still runs our config, and waits (bounded) for them to exit.
#
# Usage:
#   fixture.sh start DIR      set up and start; DIR must be empty or absent
#   fixture.sh env DIR        print the environment for tests (sh syntax)
#   fixture.sh stop DIR       stop what start started (idempotent)
#   fixture.sh run CMD ARGS   start in a fresh temp dir, run CMD with the
#                             environment exported, always stop and clean up;
#                             exits with CMD's status
#
# Environment given to tests (fixture.sh env):
#   HALYARD_DNS_ZONE       halyard.test
#   HALYARD_DNS_FORWARDER  127.0.0.1@PORT of the validating unbound
#   HALYARD_DNS_AUTH       127.0.0.1@PORT of nsd
#   HALYARD_DNS_TA         the zone's DS record (trust anchor file)
#   HALYARD_DNS_DIR        the fixture directory (logs under nsd/, unbound/)
#
# Extra records for one test (optional, read by start):
#   HALYARD_DNS_EXTRA_RECORDS=FILE           zone lines appended to halyard.test before signing
#                                            (relative names are under halyard.test.)
#   HALYARD_DNS_EXTRA_INSECURE_RECORDS=FILE  lines appended to insecure.halyard.test (unsigned)
#   HALYARD_DNS_EXTRA_TAMPER=FILE            lines "OWNER. TYPE RDATA": after signing, the
#                                            signed record OWNER/TYPE gets RDATA (its RRSIG
#                                            stays), so that RRset is bogus
#
# Packages: nsd unbound ldnsutils bind9-dnsutils python3 (all in .ci/install-deps).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ZONE=halyard.test

log() { printf '[dns-fixture] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() {
        local c miss=()
        for c in "$@"; do command -v "$c" >/dev/null 2>&1 || miss+=("$c"); done
        ((${#miss[@]} == 0)) || die "missing commands: ${miss[*]} (run .ci/install-deps)"
}

# Two distinct ports free for both UDP and TCP on 127.0.0.1 right now.
free_ports() {
        python3 - <<'PY'
import random, socket
found = []
for _ in range(200):
    p = random.randint(20000, 60000)
    if p in found:
        continue
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", p))
            s.close()
    except OSError:
        continue
    found.append(p)
    if len(found) == 2:
        break
print(*found)
PY
}

make_zones() {
        local d=$1 serial
        serial=$(date -u +%Y%m%d01)
        mkdir -p "$d/zones"
        sed -e "s/@SERIAL@/$serial/" "$HERE/$ZONE.zone.in" > "$d/zones/$ZONE.zone"
        sed -e "s/@SERIAL@/$serial/" "$HERE/insecure.$ZONE.zone.in" > "$d/zones/insecure.$ZONE.zone"
        if [[ -n ${HALYARD_DNS_EXTRA_RECORDS:-} ]]; then
                printf '\n; extra records (HALYARD_DNS_EXTRA_RECORDS)\n$ORIGIN %s.\n' "$ZONE" >> "$d/zones/$ZONE.zone"
                cat "$HALYARD_DNS_EXTRA_RECORDS" >> "$d/zones/$ZONE.zone"
        fi
        if [[ -n ${HALYARD_DNS_EXTRA_INSECURE_RECORDS:-} ]]; then
                printf '\n$ORIGIN insecure.%s.\n' "$ZONE" >> "$d/zones/insecure.$ZONE.zone"
                cat "$HALYARD_DNS_EXTRA_INSECURE_RECORDS" >> "$d/zones/insecure.$ZONE.zone"
        fi
        (
                cd "$d/zones"
                local ksk zsk
                ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$ZONE")
                zsk=$(ldns-keygen -a ECDSAP256SHA256 "$ZONE")
                # Valid from an hour ago (clock skew) for 30 days.
                ldns-signzone -i "$(date -u -d '-1 hour' +%Y%m%d%H%M%S)" \
                        -e "$(date -u -d '+30 days' +%Y%m%d%H%M%S)" \
                        -f "$ZONE.zone.signed" "$ZONE.zone" "$zsk" "$ksk"
                cp "$ksk.ds" "$d/ta.ds"
        )
        # Make three RRsets bogus: change their rdata, keep their RRSIGs.
        python3 - "$d/zones/$ZONE.zone.signed" "${HALYARD_DNS_EXTRA_TAMPER:-}" <<'PY'
import sys
path = sys.argv[1]
tamper = {
    ("bogus.halyard.test.", "A"): "192.0.2.67",
    ("bogusmx.halyard.test.", "MX"): "10 mx2.halyard.test.",
}
if len(sys.argv) > 2 and sys.argv[2]:
    for line in open(sys.argv[2]):
        f = line.split(None, 2)
        if len(f) == 3:
            tamper[(f[0].lower(), f[1].upper())] = f[2].strip()
out, hits = [], set()
for line in open(path):
    f = line.split()
    key = (f[0].lower(), f[3]) if len(f) >= 5 else None
    if key in tamper:
        line = "\t".join(f[:4]) + "\t" + tamper[key] + "\n"
        hits.add(key)
    out.append(line)
if hits != set(tamper):
    sys.exit("tamper: records not found: %s" % (set(tamper) - hits))
open(path, "w").writelines(out)
PY
}

write_configs() {
        local d=$1 nsd_port=$2 ub_port=$3
        mkdir -p "$d/nsd" "$d/unbound"
        cat > "$d/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1
    port: $nsd_port
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "$d/zones"
    database: ""
    zonelistfile: "$d/nsd/zone.list"
    xfrdfile: "$d/nsd/xfrd.state"
    xfrdir: "$d/nsd"
    pidfile: "$d/nsd/nsd.pid"
    logfile: "$d/nsd/nsd.log"
    server-count: 1
    verbosity: 1
    hide-version: yes
    reuseport: no
remote-control:
    control-enable: no
zone:
    name: "$ZONE"
    zonefile: "$ZONE.zone.signed"
zone:
    name: "insecure.$ZONE"
    zonefile: "insecure.$ZONE.zone"
EOF
        cat > "$d/unbound/unbound.conf" <<EOF
server:
    interface: 127.0.0.1
    port: $ub_port
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "$d/unbound"
    pidfile: "$d/unbound/unbound.pid"
    logfile: "$d/unbound/unbound.log"
    use-syslog: no
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    auto-trust-anchor-file: ""
    trust-anchor-file: "$d/ta.ds"
    do-not-query-localhost: no
    local-zone: "test." nodefault
    val-log-level: 2
    harden-dnssec-stripped: yes
    # the zone's negative answers and bogus results must not linger between runs
    val-bogus-ttl: 1
remote-control:
    control-enable: no
stub-zone:
    name: "$ZONE"
    stub-addr: 127.0.0.1@$nsd_port
EOF
        nsd-checkconf "$d/nsd/nsd.conf"
        unbound-checkconf "$d/unbound/unbound.conf" >/dev/null
}

# Is PID still the daemon we started from DIR's config? (guards against PID reuse)
ours() {
        local pid=$1 d=$2
        [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$d/"
}

wait_dns() {  # port name; bounded: 50 x 0.1 s
        local port=$1 name=$2 i
        for i in $(seq 1 50); do
                if dig +time=1 +tries=1 +short @127.0.0.1 -p "$port" SOA "$ZONE" 2>/dev/null | grep -q hostmaster; then
                        return 0
                fi
                sleep 0.1
        done
        return 1
}

start() {
        local d=$1 attempt nsd_port ub_port
        need nsd unbound ldns-keygen ldns-signzone dig python3
        if [[ -e $d ]] && [[ -n $(ls -A "$d") ]]; then die "$d is not empty"; fi
        mkdir -p "$d"
        d=$(cd "$d" && pwd)
        make_zones "$d" >/dev/null
        : > "$d/pids"
        # A port found free can be taken before the daemon binds it: retry.
        for attempt in 1 2 3; do
                read -r nsd_port ub_port < <(free_ports)
                [[ -n ${ub_port:-} ]] || die "no free ports"
                write_configs "$d" "$nsd_port" "$ub_port"
                nsd -d -c "$d/nsd/nsd.conf" >>"$d/nsd/stdout.log" 2>&1 &
                echo "nsd $!" >> "$d/pids"
                if ! wait_dns "$nsd_port" nsd; then
                        log "nsd did not answer on $nsd_port (attempt $attempt)"
                        stop "$d"; : > "$d/pids"; continue
                fi
                unbound -d -c "$d/unbound/unbound.conf" >>"$d/unbound/stdout.log" 2>&1 &
                echo "unbound $!" >> "$d/pids"
                if ! wait_dns "$ub_port" unbound; then
                        log "unbound did not answer on $ub_port (attempt $attempt)"
                        stop "$d"; : > "$d/pids"; continue
                fi
                cat > "$d/env" <<EOF
HALYARD_DNS_ZONE=$ZONE
HALYARD_DNS_FORWARDER=127.0.0.1@$ub_port
HALYARD_DNS_AUTH=127.0.0.1@$nsd_port
HALYARD_DNS_TA=$d/ta.ds
HALYARD_DNS_DIR=$d
EOF
                log "up in $d: nsd 127.0.0.1@$nsd_port, unbound 127.0.0.1@$ub_port ($(tr '\n' ' ' < "$d/pids"))"
                return 0
        done
        die "could not start nsd/unbound; logs: $d/nsd/*.log $d/unbound/*.log"
}

stop() {
        local d=$1 name pid i
        [[ -f $d/pids ]] || return 0
        d=$(cd "$d" && pwd)
        while read -r name pid; do
                [[ -n ${pid:-} ]] || continue
                if ours "$pid" "$d"; then
                        kill -TERM "$pid" 2>/dev/null || true
                        for i in $(seq 1 50); do
                                kill -0 "$pid" 2>/dev/null || break
                                sleep 0.1
                        done
                        if kill -0 "$pid" 2>/dev/null && ours "$pid" "$d"; then
                                log "$name ($pid) ignored SIGTERM for 5 s, sending SIGKILL"
                                kill -KILL "$pid" 2>/dev/null || true
                        fi
                fi
                # reap if it is our child (run mode); harmless otherwise
                wait "$pid" 2>/dev/null || true
        done < "$d/pids"
        rm -f "$d/pids"
}

run() {
        (($# > 0)) || die "usage: $0 run CMD [ARGS...]"
        local d rc=0
        d=$(mktemp -d "${TMPDIR:-/tmp}/halyard-dns.XXXXXX")
        # shellcheck disable=SC2064
        trap "stop '$d'; rm -rf '$d'" EXIT
        trap 'exit 143' TERM INT
        start "$d"
        set -a
        # shellcheck disable=SC1091
        . "$d/env"
        set +a
        "$@" || rc=$?
        if ((rc != 0)) && [[ -n ${HALYARD_DNS_KEEP_LOGS:-} ]]; then
                cp -r "$d" "$HALYARD_DNS_KEEP_LOGS" 2>/dev/null || true
        fi
        return "$rc"
}

case "${1:-}" in
start) [[ -n ${2:-} ]] || die "usage: $0 start DIR"; start "$2" ;;
stop)  [[ -n ${2:-} ]] || die "usage: $0 stop DIR"; stop "$2" ;;
env)   [[ -n ${2:-} ]] || die "usage: $0 env DIR"; cat "$2/env" ;;
run)   shift; run "$@" ;;
*)     die "usage: $0 {start DIR|stop DIR|env DIR|run CMD [ARGS...]}" ;;
esac
