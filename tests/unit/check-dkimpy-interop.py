#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Cross-checks halyard's DKIM and ARC code against an independent
implementation, dkimpy (Debian python3-dkim, with python3-authres), so that
neither side only verifies itself (../shared/notes/arc.md §7.10):

  * DKIM signed by halyard (rsa-sha256, ed25519-sha256) verifies in dkimpy;
  * DKIM signed by dkimpy (each canonicalization, both algorithms) verifies
    in halyard;
  * ARC chains of five hops alternating halyard and dkimpy sealers (both
    orders) validate as pass in both after every hop, and both see a body
    change as fail;
  * the seven signing cases of the suite's unused_tests.yml (h= order,
    duplicated and absent fields, A-R merging), which upstream never runs:
    their expected b= values are stale (dkimpy, which passes all 17 run
    cases, disagrees with six of them), so halyard's seal is compared with
    dkimpy's instead, byte for byte after removing white space (RSA PKCS#1
    v1.5 is deterministic).

Keys are generated fresh (python3-cryptography); DNS answers come from a
table given to dkimpy through dnsfunc= and to halyard's mailauth-tool as a
JSON file. Output is TAP.
Usage: check-dkimpy-interop.py MAILAUTH-TOOL [ARC-SUITE-DIR]"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

import dkim
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

TOOL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MAILAUTH_TOOL")
WORK = tempfile.mkdtemp(prefix="mailauth-interop-")
DNS = {}
RESULTS = []

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: list@example.net\r\n"
    b"Subject: interop  test\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <interop@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hello,  list.\r\n"
    b"Trailing space here   \r\n"
    b"\r\n"
    b"\r\n"
)


def check(name, ok, diag=""):
    RESULTS.append((name, bool(ok), diag))


def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    txt = DNS.get(n.rstrip(".").lower())
    return txt.encode() if txt else None


def write_dns():
    path = os.path.join(WORK, "dns.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(DNS, f)
    return path


def tool(*args, stdin=b""):
    p = subprocess.run([TOOL, *args], input=stdin, capture_output=True, check=False)
    if p.returncode != 0:
        raise RuntimeError("mailauth-tool %s: %s" % (args[0], p.stderr.decode(errors="replace")))
    return p.stdout


def rsa_key(selector, domain):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    DNS["%s._domainkey.%s" % (selector, domain)] = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()
    path = os.path.join(WORK, selector + ".pem")
    with open(path, "wb") as f:
        f.write(pem)
    return pem, path


def ed25519_key(selector, domain):
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    DNS["%s._domainkey.%s" % (selector, domain)] = "v=DKIM1; k=ed25519; p=" + base64.b64encode(pub).decode()
    path = os.path.join(WORK, selector + ".pem")
    with open(path, "wb") as f:
        f.write(pem)
    return base64.b64encode(seed), path


def dkim_tests():
    _, rsa_path = rsa_key("hrsa", "example.org")
    _, ed_path = ed25519_key("hed", "example.org")
    rsa_pem, _ = rsa_key("drsa", "example.org")
    ed_seed, _ = ed25519_key("ded", "example.org")
    dns = write_dns()

    for sel, path, alg in (("hrsa", rsa_path, "rsa-sha256"), ("hed", ed_path, "ed25519-sha256")):
        field = tool("dkim-sign", path, "example.org", sel, alg, "1764151200", stdin=MESSAGE)
        signed = field + MESSAGE
        d = dkim.DKIM(signed, minkey=1024)
        check("dkimpy verifies halyard's DKIM %s" % alg, d.verify(idx=0, dnsfunc=dnsfunc), field.decode())

    for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple"), (b"relaxed", b"simple"), (b"simple", b"relaxed")):
        for sel, key, alg in (("drsa", rsa_pem, b"rsa-sha256"), ("ded", ed_seed, b"ed25519-sha256")):
            field = dkim.sign(MESSAGE, sel.encode(), b"example.org", key, canonicalize=canon,
                              signature_algorithm=alg)
            out = tool("dkim-verify", dns, stdin=field + MESSAGE).decode()
            check("halyard verifies dkimpy's DKIM %s %s/%s" % (alg.decode(), canon[0].decode(), canon[1].decode()),
                  out.startswith("pass"), out + field.decode())


def arc_tests():
    _, h_path = rsa_key("harc", "halyard.example")
    d_pem, _ = rsa_key("darc", "dkimpy.example")
    dns = write_dns()

    for first in ("halyard", "dkimpy"):
        msg = b"Authentication-Results: mx0.example; spf=pass smtp.mailfrom=alice@example.org\r\n" + MESSAGE
        order = [first, "dkimpy" if first == "halyard" else "halyard"] * 3
        for hop, sealer in enumerate(order[:5], 1):
            if sealer == "halyard":
                fields = tool("arc-seal", h_path, "halyard.example", "harc", "hop%d.halyard.example" % hop,
                              "1764151200", dns, stdin=msg)
                msg = fields + msg
            else:
                cv, _, _ = dkim.arc_verify(msg, dnsfunc=dnsfunc)
                srv = b"hop%d.dkimpy.example" % hop
                msg = b"Authentication-Results: " + srv + b"; arc=" + cv + b"\r\n" + msg
                fields = dkim.arc_sign(msg, b"darc", b"dkimpy.example", d_pem, srv)
                if not fields:
                    check("dkimpy seals hop %d after %s" % (hop, first), False, "arc_sign returned nothing")
                    break
                msg = b"".join(fields) + msg
            ours = tool("arc-validate", dns, stdin=msg).decode().split()
            theirs = dkim.arc_verify(msg, dnsfunc=dnsfunc)
            check("chain starting with %s, hop %d (%s): halyard says pass" % (first, hop, sealer),
                  ours[:2] == ["pass", str(hop)], " ".join(ours) + "\n" + msg.decode(errors="replace"))
            check("chain starting with %s, hop %d (%s): dkimpy says pass" % (first, hop, sealer),
                  theirs[0] == b"pass", repr(theirs) + "\n" + msg.decode(errors="replace"))

        # A changed body, a changed signed header, and a changed header that
        # only the seals cover (the oldest ARC-Authentication-Results).
        aar1 = msg.index(b"ARC-Authentication-Results: i=1;")
        for what, tampered in (
                ("body changed", msg.replace(b"Hello,  list.", b"Hello,  LIST.")),
                ("signed header changed", msg.replace(b"Subject: interop  test", b"Subject: interop  TEST")),
                ("sealed header changed", msg[:aar1] + msg[aar1:].replace(b"arc=none", b"arc=pass", 1))):
            ours = tool("arc-validate", dns, stdin=tampered).decode().split()
            theirs = dkim.arc_verify(tampered, dnsfunc=dnsfunc)
            check("chain starting with %s, %s: halyard says fail" % (first, what), ours[0] == "fail", " ".join(ours))
            check("chain starting with %s, %s: dkimpy says fail" % (first, what), theirs[0] == b"fail", repr(theirs))


def normalized(value):
    """The upstream comparator: no white space, split at ";", as a set."""
    return sorted(x for x in "".join(value.split()).split(";") if x)


def fields(lines):
    out = {}
    for line in lines:
        name, value = line.split(":", 1)
        out[name.strip().lower()] = normalized(value)
    return out


def unused_suite_tests(suite):
    with open(os.path.join(suite, "unused_tests.yml"), encoding="utf-8") as f:
        scenarios = [d for d in yaml.safe_load_all(f) if d]
    for scen in scenarios:
        txt = {k: str(v).replace("\n", "") for k, v in scen["txt-records"].items()}
        DNS.clear()
        DNS.update(txt)
        dns = write_dns()
        key = os.path.join(WORK, "unused.pem")
        with open(key, "w", encoding="utf-8") as f:
            f.write(scen["privatekey"])
        for cid, case in scen["tests"].items():
            msg = case["message"].replace("\n", "\r\n").encode()
            theirs = dkim.arc_sign(msg, scen["sel"].encode(), scen["domain"].encode(), scen["privatekey"].encode(),
                                   case["srv-id"].encode(), timestamp=int(case["t"]), standardize=True,
                                   include_headers=[h.encode() for h in case["sig-headers"].split(":")])
            ours = tool("arc-seal-suite", key, scen["domain"], scen["sel"], case["srv-id"], str(case["t"]),
                        case["sig-headers"], dns, stdin=msg)
            ours_f = fields(l for l in ours.decode().split("\r\n") if l)
            theirs_f = fields(l.decode() for l in theirs)
            check("unused suite case %s: halyard's seal equals dkimpy's" % cid,
                  ours_f == theirs_f and len(ours_f) == 3, ours.decode() + "\n" + b"".join(theirs).decode())


def main():
    if not TOOL:
        print("Bail out! usage: check-dkimpy-interop.py MAILAUTH-TOOL")
        return 1
    try:
        dkim_tests()
        arc_tests()
        if len(sys.argv) > 2:
            unused_suite_tests(sys.argv[2])
    except Exception as e:  # a crash is a failure, reported as one
        check("no exception", False, repr(e))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print("1..%d" % len(RESULTS))
    failed = 0
    for i, (name, ok, diag) in enumerate(RESULTS, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        if not ok:
            failed += 1
            for line in diag.splitlines()[:40]:
                print("# " + line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
