#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checks a delivery status notification written by queued-bounce.c with
Python's email package (policy.default), independently of the C code.

    check-dsn.py DSN-FILE [CHECK...]

Always checked: the wire form (CRLF only, no line over 998 octets), the
multipart/report structure, the boundary (only on delimiter lines), no
parser defects, the fixed header fields (From, To, Auto-Submitted, Date,
Message-ID, MIME-Version), the per-message and per-recipient blocks of the
delivery-status part and their required fields.

CHECKs (all must hold):
    msg:FIELD=VALUE        top-level header field equals VALUE
    report-type=VALUE      multipart/report's report-type
    parts=N                number of MIME parts
    part3=TYPE             content type of the third part
    cte3=VALUE             Content-Transfer-Encoding of the third part
    rcpts=N                number of per-recipient blocks
    pm:FIELD=VALUE         per-message field equals VALUE
    pm:!FIELD              per-message field absent
    rcptI:FIELD=VALUE      field of the I-th recipient block equals VALUE
    rcptI:FIELD~VALUE      ... contains VALUE
    rcptI:!FIELD           ... is absent
    human~TEXT             the text/plain part contains TEXT (whitespace,
                           line breaks included, compared collapsed)
    human!~TEXT            ... does not contain TEXT
    to=ADDR                the one To: address is ADDR
    orig:FIELD=VALUE       the returned message's header field (part 3)
    orig~TEXT              part 3 (decoded text) contains TEXT
    orig!~TEXT             part 3 does not contain TEXT
    raw!~TEXT              the raw DSN does not contain TEXT (bytes, UTF-8)
    rawline!^TEXT          no raw line starts with TEXT
Exit status 0 when everything holds; otherwise the failures on stdout.
"""

import email
import email.parser
import email.policy
import email.utils
import sys


def fail(errors, what):
    errors.append(what)


def split_blocks(body):
    """Blocks of a delivery-status body: header-like groups separated by
    empty lines (RFC 3464 §2.1)."""
    blocks = []
    for chunk in body.split(b"\r\n\r\n"):
        if chunk.strip(b"\r\n") == b"":
            continue
        parser = email.parser.BytesParser(policy=email.policy.default)
        blocks.append(parser.parsebytes(chunk.strip(b"\r\n") + b"\r\n\r\n", headersonly=True))
    return blocks


def unescape(s):
    """8-bit header octets come back from the parser as surrogate escapes;
    RFC 6532 says they are UTF-8."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return s


def header_str(h):
    return None if h is None else unescape(str(h))


def main():
    path = sys.argv[1]
    checks = sys.argv[2:]
    errors = []
    raw = open(path, "rb").read()

    # Wire form.
    lines = raw.split(b"\r\n")
    if not raw.endswith(b"\r\n"):
        fail(errors, "does not end with CRLF")
    for i, line in enumerate(lines):
        if b"\r" in line or b"\n" in line:
            fail(errors, "bare CR or LF in line %d" % (i + 1))
            break
        if len(line) > 998:
            fail(errors, "line %d is %d octets" % (i + 1, len(line)))
            break

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    if msg.defects:
        fail(errors, "message defects: %r" % msg.defects)
    if msg.get_content_type() != "multipart/report":
        fail(errors, "content type %s" % msg.get_content_type())
        print("\n".join(errors))
        return 1
    boundary = msg.get_boundary()
    if not boundary:
        fail(errors, "no boundary")
    parts = msg.get_payload()

    # The boundary: only on delimiter lines, one per part plus the close.
    delim = b"--" + boundary.encode()
    occurrences = raw.count(delim)
    delim_lines = [l for l in lines if l.startswith(delim)]
    if occurrences != len(parts) + 1 or len(delim_lines) != len(parts) + 1:
        fail(errors, "boundary occurs %d times (%d lines) for %d parts"
             % (occurrences, len(delim_lines), len(parts)))
    if lines.count(delim + b"--") != 1:
        fail(errors, "no single close delimiter")

    for i, p in enumerate(parts):
        if p.defects:
            fail(errors, "part %d defects: %r" % (i + 1, p.defects))

    # Fixed fields.
    frm = msg["From"]
    if frm is None or not str(frm.addresses[0].username) == "MAILER-DAEMON":
        fail(errors, "From is %r" % header_str(frm))
    elif frm.addresses[0].display_name != "Mail Delivery System":
        fail(errors, "From display name %r" % frm.addresses[0].display_name)
    if msg["To"] is None or len(msg["To"].addresses) != 1:
        fail(errors, "To is %r" % header_str(msg["To"]))
    if header_str(msg["Auto-Submitted"]) != "auto-replied":
        fail(errors, "Auto-Submitted is %r" % header_str(msg["Auto-Submitted"]))
    if header_str(msg["MIME-Version"]) != "1.0":
        fail(errors, "MIME-Version %r" % header_str(msg["MIME-Version"]))
    if msg["Date"] is None or msg["Date"].datetime is None:
        fail(errors, "Date %r" % header_str(msg["Date"]))
    mid = header_str(msg["Message-ID"])
    if not mid or not mid.startswith("<") or not mid.endswith(">") or "@" not in mid:
        fail(errors, "Message-ID %r" % mid)
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        if len(msg.get_all(name, [])) != 1:
            fail(errors, "%s appears %d times" % (name, len(msg.get_all(name, []))))
    report_type = msg.get_param("report-type")
    if len(parts) < 2:
        fail(errors, "only %d parts" % len(parts))
        print("\n".join(errors))
        return 1
    if parts[0].get_content_type() != "text/plain":
        fail(errors, "part 1 is %s" % parts[0].get_content_type())
    want_status = "message/" + str(report_type)
    if parts[1].get_content_type() != want_status:
        fail(errors, "part 2 is %s, report-type %s" % (parts[1].get_content_type(), report_type))
    human = parts[0].get_content()
    human_flat = " ".join(human.split())

    # The delivery-status part, from the raw bytes (Python's email knows
    # message/delivery-status but not message/global-delivery-status).
    raw_parts = raw.split(b"\r\n" + delim)
    status_raw = raw_parts[2]
    hdr_end = status_raw.find(b"\r\n\r\n")
    blocks = split_blocks(status_raw[hdr_end + 4:])
    if not blocks:
        fail(errors, "empty delivery-status")
        print("\n".join(errors))
        return 1
    per_message, per_rcpt = blocks[0], blocks[1:]
    if per_message["Reporting-MTA"] is None:
        fail(errors, "no Reporting-MTA")
    for i, b in enumerate(per_rcpt):
        for name in ("Final-Recipient", "Action", "Status"):
            if b[name] is None:
                fail(errors, "recipient %d has no %s" % (i, name))
        if b.defects:
            fail(errors, "recipient %d defects %r" % (i, b.defects))
    if want_status == "message/delivery-status":
        # Python's own parse must agree with ours.
        py_blocks = parts[1].get_payload()
        if len(py_blocks) != len(blocks):
            fail(errors, "email parses %d blocks, we %d" % (len(py_blocks), len(blocks)))
        for mine, theirs in zip(blocks, py_blocks):
            for k in mine.keys():
                if header_str(mine[k]) != header_str(theirs[k]):
                    fail(errors, "block field %s differs: %r vs %r" % (k, header_str(mine[k]), header_str(theirs[k])))
        if any(b > 127 for b in status_raw):
            fail(errors, "8-bit octets in message/delivery-status")

    third = parts[2] if len(parts) > 2 else None

    def third_text():
        if third is None:
            return ""
        ct = third.get_content_type()
        if ct in ("message/rfc822",):
            return third.get_payload()[0].as_string()
        # message/global(-headers), text/rfc822-headers: the raw part body.
        r = raw_parts[3]
        return r[r.find(b"\r\n\r\n") + 4:].decode("utf-8", "replace")

    def third_header(name):
        if third is None:
            return None
        ct = third.get_content_type()
        if ct == "message/rfc822":
            return header_str(third.get_payload()[0][name])
        r = raw_parts[3]
        body = r[r.find(b"\r\n\r\n") + 4:]
        m = email.parser.BytesParser(policy=email.policy.default).parsebytes(body, headersonly=True)
        return header_str(m[name])

    for c in checks:
        try:
            if c.startswith("msg:"):
                k, v = c[4:].split("=", 1)
                if header_str(msg[k]) != v:
                    fail(errors, "%s: got %r" % (c, header_str(msg[k])))
            elif c.startswith("to="):
                got = unescape(msg["To"].addresses[0].addr_spec) if msg["To"] is not None else None
                if got != c[3:]:
                    fail(errors, "%s: got %r" % (c, got))
            elif c.startswith("report-type="):
                if report_type != c.split("=", 1)[1]:
                    fail(errors, "%s: got %r" % (c, report_type))
            elif c.startswith("parts="):
                if len(parts) != int(c.split("=", 1)[1]):
                    fail(errors, "%s: got %d" % (c, len(parts)))
            elif c.startswith("part3="):
                got = third.get_content_type() if third is not None else None
                if got != c.split("=", 1)[1]:
                    fail(errors, "%s: got %r" % (c, got))
            elif c.startswith("cte3="):
                got = header_str(third["Content-Transfer-Encoding"]) if third is not None else None
                want = c.split("=", 1)[1]
                if (got or "") != want:
                    fail(errors, "%s: got %r" % (c, got))
            elif c.startswith("rcpts="):
                if len(per_rcpt) != int(c.split("=", 1)[1]):
                    fail(errors, "%s: got %d" % (c, len(per_rcpt)))
            elif c.startswith("pm:") or c.startswith("rcpt"):
                if c.startswith("pm:"):
                    block, spec = per_message, c[3:]
                else:
                    idx, spec = c[4:].split(":", 1)
                    block = per_rcpt[int(idx)]
                if spec.startswith("!"):
                    if block[spec[1:]] is not None:
                        fail(errors, "%s: present as %r" % (c, header_str(block[spec[1:]])))
                elif "~" in spec and ("=" not in spec or spec.index("~") < spec.index("=")):
                    k, v = spec.split("~", 1)
                    if block[k] is None or v not in str(block[k]):
                        fail(errors, "%s: got %r" % (c, header_str(block[k])))
                else:
                    k, v = spec.split("=", 1)
                    if header_str(block[k]) != v:
                        fail(errors, "%s: got %r" % (c, header_str(block[k])))
            elif c.startswith("human!~"):
                if " ".join(c[7:].split()) in human_flat:
                    fail(errors, c)
            elif c.startswith("human~"):
                if " ".join(c[6:].split()) not in human_flat:
                    fail(errors, "%s: human part is %r" % (c, human[:2000]))
            elif c.startswith("orig:"):
                k, v = c[5:].split("=", 1)
                got = third_header(k)
                if got != v:
                    fail(errors, "%s: got %r" % (c, got))
            elif c.startswith("orig!~"):
                if c[6:] in third_text():
                    fail(errors, c)
            elif c.startswith("orig~"):
                if c[5:] not in third_text():
                    fail(errors, "%s: part 3 starts %r" % (c, third_text()[:500]))
            elif c.startswith("raw!~"):
                if c[5:].encode() in raw:
                    fail(errors, c)
            elif c.startswith("rawline!^"):
                t = c[9:].encode()
                if any(l.startswith(t) for l in lines):
                    fail(errors, c)
            else:
                fail(errors, "unknown check %r" % c)
        except Exception as e:  # a malformed check or a missing part
            fail(errors, "%s: %r" % (c, e))

    if errors:
        print("\n".join(errors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
