#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checks that validation.json and signing.json, which test-arc-suite reads
with json-c, hold exactly the cases of the suite's YAML files (the upstream
data): same ids (the four ids the validation file repeats are kept, the later
ones named "<id>#2"), messages, expected results, DNS records, keys and
expected seals. So the C harness needs no YAML parser and still runs the
real suite. Output is TAP: one line per case plus the counts."""

import json
import os
import sys

import yaml


class KeepDuplicates(yaml.SafeLoader):
    """PyYAML keeps the last of duplicated keys; the suite has four, with
    different messages, and all of them must run."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        out = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            value = self.construct_object(value_node, deep=deep)
            name, n = key, 1
            while name in out:
                n += 1
                name = "%s#%d" % (key, n)
            out[name] = value
        return out


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=KeepDuplicates) if d]


def txt_records(scen):
    """The records as a resolver serves them: the README's JSON drops the
    line breaks of YAML literal blocks (a folded block already has none)."""
    return {k: str(v).replace("\n", "") for k, v in scen.get("txt-records", {}).items()}


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ARC_SUITE_DIR")
    if not d:
        print("Bail out! no suite directory")
        return 1
    with open(os.path.join(d, "validation.json"), encoding="utf-8") as f:
        vjson = {c["id"]: c for c in json.load(f)}
    with open(os.path.join(d, "signing.json"), encoding="utf-8") as f:
        sjson = {c["id"]: c for c in json.load(f)}

    checks = []
    for scen in load(os.path.join(d, "arc-draft-validation-tests.yml")):
        txt = txt_records(scen)
        for cid, case in scen["tests"].items():
            j = vjson.pop(cid, None)
            ok = j is not None and j["message"] == case["message"] and \
                j["cv"] == (case.get("cv") or "") and j["txt_records"] == txt
            checks.append(("validation " + cid, ok))
    for scen in load(os.path.join(d, "arc-draft-sign-tests.yml")):
        txt = txt_records(scen)
        for cid, case in scen["tests"].items():
            j = sjson.pop(cid, None)
            ok = j is not None and j["message"] == case["message"] and \
                j["txt_records"] == txt and j["privatekey"] == scen["privatekey"] and \
                j["domain"] == scen["domain"] and j["selector"] == scen["sel"] and \
                str(j["t"]) == str(case["t"]) and j["sig_headers"] == case["sig-headers"] and \
                j["srv_id"] == case["srv-id"] and \
                all((j[k] or "") == (case.get(k) or "") for k in ("AS", "AMS", "AAR"))
            checks.append(("signing " + cid, ok))
    for cid in vjson:
        checks.append(("validation.json has an extra case " + cid, False))
    for cid in sjson:
        checks.append(("signing.json has an extra case " + cid, False))
    n_val = sum(1 for name, _ in checks if name.startswith("validation "))
    n_sig = sum(1 for name, _ in checks if name.startswith("signing "))
    checks.append(("175 validation cases (4 duplicated ids kept), 17 signing cases",
                   n_val == 175 and n_sig == 17))

    print("1..%d" % len(checks))
    failed = 0
    for i, (name, ok) in enumerate(checks, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
