# SPDX-License-Identifier: MIT
"""One checker for RFC 8460 aggregate reports, used on the real published
reports in ../shared/testdata/tlsrpt/ and on what halyard-tlsrptd emits.

parse_report(obj) is the lenient reader (what a report receiver must
accept: Microsoft's zone-less date-times, Mail.ru's next-midnight end,
"" for absent fields, mx-host as a bare string) and returns a normalised
form; it raises ReportError for what no receiver can use (missing
required fields, wrong JSON types, unknown policy types).

check_generated(obj) is the strict side for halyard's own output: the
lenient parse, plus tlsrpt-report.schema.json (Draft 2020-12, with format
checks), plus the rules the schema cannot say (detail counts add up to
the failure total, dates span exactly one UTC day)."""

import datetime
import ipaddress
import json
import os
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
SOURCE_ROOT = pathlib.Path(os.environ.get("HALYARD_SOURCE_ROOT") or HERE.parent.parent)


def testdata_dir():
    """The shared TLS-RPT samples: $HALYARD_TLSRPT_TESTDATA, or the team
    folder beside the checkout (../shared/testdata/tlsrpt)."""
    p = os.environ.get("HALYARD_TLSRPT_TESTDATA")
    for cand in ([pathlib.Path(p)] if p else []) + [SOURCE_ROOT.parent / "shared" / "testdata" / "tlsrpt",
                                                   pathlib.Path("/work/shared/testdata/tlsrpt")]:
        if (cand / "tlsrpt-report.schema.json").exists():
            return cand
    return None


class ReportError(ValueError):
    pass


POLICY_TYPES = ("sts", "tlsa", "no-policy-found")
DETAIL_STRING_FIELDS = ("result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
                        "receiving-ip", "additional-information", "failure-reason-code")
_DT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")


def _need(obj, key, typ, where):
    if key not in obj:
        raise ReportError("%s: missing %s" % (where, key))
    v = obj[key]
    if typ is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, typ)
    if not ok:
        raise ReportError("%s: %s is %s, not %s" % (where, key, type(v).__name__, typ.__name__))
    return v


def parse_datetime(s, where):
    m = _DT.match(s)
    if not m:
        raise ReportError("%s: not a date-time: %r" % (where, s))
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    tz = m.group(8)
    dt = datetime.datetime(y, mo, d, h, mi, sec, tzinfo=datetime.timezone.utc)  # no zone: UTC (Microsoft)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        dt -= sign * datetime.timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return dt


def parse_report(obj):
    """Lenient parse; returns {"org", "contact", "report_id", "start", "end",
    "policies": [{"type", "domain", "strings", "mx", "ok", "fail", "details": [...]}]}."""
    if not isinstance(obj, dict):
        raise ReportError("report is not an object")
    out = {"org": _need(obj, "organization-name", str, "report"),
           "contact": _need(obj, "contact-info", str, "report"),
           "report_id": _need(obj, "report-id", str, "report")}
    dr = _need(obj, "date-range", dict, "report")
    out["start"] = parse_datetime(_need(dr, "start-datetime", str, "date-range"), "start-datetime")
    out["end"] = parse_datetime(_need(dr, "end-datetime", str, "date-range"), "end-datetime")
    if out["end"] < out["start"]:
        raise ReportError("date-range ends before it starts")
    pols = _need(obj, "policies", list, "report")
    out["policies"] = []
    for i, pr in enumerate(pols):
        where = "policies[%d]" % i
        if not isinstance(pr, dict):
            raise ReportError("%s is not an object" % where)
        pol = _need(pr, "policy", dict, where)
        ptype = _need(pol, "policy-type", str, where + ".policy")
        if ptype not in POLICY_TYPES:
            raise ReportError("%s: unknown policy-type %r" % (where, ptype))
        strings = pol.get("policy-string", [])
        if isinstance(strings, str):
            strings = [strings]
        if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
            raise ReportError("%s: policy-string is not an array of strings" % where)
        mx = pol.get("mx-host", [])
        if isinstance(mx, str):  # the RFC example before erratum 6241
            mx = [mx]
        if not isinstance(mx, list) or not all(isinstance(s, str) for s in mx):
            raise ReportError("%s: mx-host is not an array of strings" % where)
        summ = _need(pr, "summary", dict, where)
        p = {"type": ptype, "domain": _need(pol, "policy-domain", str, where + ".policy"), "strings": strings,
             "mx": mx, "ok": _need(summ, "total-successful-session-count", int, where + ".summary"),
             "fail": _need(summ, "total-failure-session-count", int, where + ".summary"), "details": []}
        for k, fd in enumerate(pr.get("failure-details", [])):
            w = "%s.failure-details[%d]" % (where, k)
            if not isinstance(fd, dict):
                raise ReportError("%s is not an object" % w)
            d = {"result-type": _need(fd, "result-type", str, w), "count": _need(fd, "failed-session-count", int, w)}
            for f in DETAIL_STRING_FIELDS[1:]:
                v = fd.get(f)
                if v is None or v == "":  # "" read as absent (parsedmarc's edge case)
                    continue
                if not isinstance(v, str):
                    raise ReportError("%s: %s is not a string" % (w, f))
                if f in ("sending-mta-ip", "receiving-ip"):
                    try:
                        ipaddress.ip_address(v)
                    except ValueError:
                        raise ReportError("%s: %s is not an IP address: %r" % (w, f, v))
                d[f] = v
            p["details"].append(d)
        out["policies"].append(p)
    return out


def _format_ok(fmt, v):
    if fmt == "ipv4":
        try:
            return isinstance(ipaddress.ip_address(v), ipaddress.IPv4Address)
        except ValueError:
            return False
    if fmt == "ipv6":
        try:
            return isinstance(ipaddress.ip_address(v), ipaddress.IPv6Address)
        except ValueError:
            return False
    if fmt == "date-time":
        return bool(_DT.match(v)) and _DT.match(v).group(8) is not None
    if fmt == "uri":
        return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$", v))
    return True


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _validate(schema, v, root, path, errs):
    """The part of JSON Schema 2020-12 tlsrpt-report.schema.json uses (when
    the jsonschema package is not installed)."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        _validate(node, v, root, path, errs)
    t = schema.get("type")
    if t == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            errs.append("%s: not an integer" % path)
            return
    elif t and not isinstance(v, _TYPES[t]):
        errs.append("%s: not a %s" % (path, t))
        return
    if "const" in schema and v != schema["const"]:
        errs.append("%s: not %r" % (path, schema["const"]))
    if "enum" in schema and v not in schema["enum"]:
        errs.append("%s: %r not one of the enum" % (path, v))
    if isinstance(v, str):
        if len(v) < schema.get("minLength", 0) or len(v) > schema.get("maxLength", 1 << 30):
            errs.append("%s: bad length" % path)
        if "pattern" in schema and not re.search(schema["pattern"], v):
            errs.append("%s: %r does not match %s" % (path, v, schema["pattern"]))
        if "format" in schema and not _format_ok(schema["format"], v):
            errs.append("%s: %r is not a %s" % (path, v, schema["format"]))
    if isinstance(v, int) and "minimum" in schema and v < schema["minimum"]:
        errs.append("%s: below minimum" % path)
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0):
            errs.append("%s: too few items" % path)
        for i, item in enumerate(v):
            if "items" in schema:
                _validate(schema["items"], item, root, "%s/%d" % (path, i), errs)
    if isinstance(v, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in v:
                errs.append("%s: missing %s" % (path, k))
        for k, item in v.items():
            if k in props:
                _validate(props[k], item, root, "%s/%s" % (path, k), errs)
            elif schema.get("additionalProperties") is False:
                errs.append("%s: unexpected %s" % (path, k))
    if "anyOf" in schema:
        if not any(not _errors(s, v, root) for s in schema["anyOf"]):
            errs.append("%s: matches none of anyOf" % path)
    for s in schema.get("allOf", []):
        _validate(s, v, root, path, errs)
    if "if" in schema and not _errors(schema["if"], v, root):
        _validate(schema.get("then", {}), v, root, path, errs)
    if "not" in schema and not _errors(schema["not"], v, root):
        errs.append("%s: matches a forbidden shape" % path)


def _errors(schema, v, root):
    errs = []
    _validate(schema, v, root, "", errs)
    return errs


def schema_errors(obj, testdata=None):
    """The strict schema's complaints (empty list: valid). Uses the
    jsonschema package when it is installed, else the subset above."""
    testdata = testdata or testdata_dir()
    schema = json.loads((testdata / "tlsrpt-report.schema.json").read_text())
    try:
        import jsonschema
    except ImportError:
        return _errors(schema, obj, schema)
    cls = jsonschema.validators.validator_for(schema)
    v = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return ["%s: %s" % ("/".join(str(x) for x in e.absolute_path), e.message) for e in v.iter_errors(obj)]


def check_generated(obj, testdata=None):
    """halyard's own output: lenient parse, strict schema, and the rules
    beyond the schema. Returns the parsed form; raises ReportError."""
    r = parse_report(obj)
    errs = schema_errors(obj, testdata)
    if errs:
        raise ReportError("schema: " + "; ".join(errs))
    if r["start"].time() != datetime.time(0, 0, 0) or r["end"] - r["start"] != datetime.timedelta(seconds=86399):
        raise ReportError("date-range is not one UTC day 00:00:00Z..23:59:59Z")
    for p in r["policies"]:
        if sum(d["count"] for d in p["details"]) > p["fail"]:
            raise ReportError("%s: failure-details count more than the failure total" % p["domain"])
        keys = [tuple(sorted((k, v) for k, v in d.items() if k != "count")) for d in p["details"]]
        if len(keys) != len(set(keys)):
            raise ReportError("%s: failure-details not merged" % p["domain"])
    return r
