#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Interop with an independent varlink implementation, the Go library
github.com/varlink/go (Debian: golang-github-varlink-go-dev):

- goclient (tests/integration/goclient/main.go) as a CLIENT of halyard-testd:
  GetInfo, GetInterfaceDescription parsed with the library's idl package,
  Echo, Stream with more, oneway, standard errors;
- the Go library as a SERVER (goclient serve) with halyardctl as client:
  info, list-interfaces, introspect, call, --more, --oneway, errors.

Built offline in GOPATH mode from the Debian package's source; skipped only
when the go tool itself is missing."""

import json
import os
import shutil
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import halyardctl, wait_until  # noqa: E402

GOPATH = os.environ.get("HALYARD_GOPATH", "/usr/share/gocode")
GO_VARLINK = os.path.join(GOPATH, "src", "github.com", "varlink", "go", "varlink")
GOCLIENT_SRC = harness.HERE / "goclient"
RS = "\x1e"

_build = {}


def setUpModule():
    harness.check_binaries()
    go = shutil.which("go")
    if not go:
        raise unittest.SkipTest("the go tool is not installed (apt-get install golang-go "
                                "golang-github-varlink-go-dev; .ci/install-deps does): interop tests skipped")
    if not os.path.isdir(GO_VARLINK):
        raise RuntimeError("Go varlink library not found at %s: install golang-github-varlink-go-dev "
                           "(or set HALYARD_GOPATH)" % GO_VARLINK)
    tmp = harness.TempDir(prefix="hyi-go-")
    _build["tmp"] = tmp
    out = tmp / "goclient"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update({
        "GO111MODULE": "off",      # GOPATH mode: imports come from GOPATH, nothing is downloaded
        "GOPATH": GOPATH,
        "GOCACHE": str(tmp / "cache"),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOENV": "off",
        "CGO_ENABLED": "0",
        "HOME": str(tmp.path),
    })
    p = subprocess.run([go, "build", "-o", str(out), "main.go"], cwd=str(GOCLIENT_SRC), env=env,
                       capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("building goclient failed (rc %d):\n%s%s" % (p.returncode, p.stdout.decode(),
                                                                         p.stderr.decode()))
    _build["binary"] = out


def tearDownModule():
    harness.kill_all()
    if "tmp" in _build:
        _build["tmp"].cleanup()


class GoClientAgainstTestd(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.testd = harness.Testd(config="[Test]\nGreeting=from-go\n").start()
        p = subprocess.run([str(_build["binary"]), "client", cls.testd.address], capture_output=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        cls.rc = p.returncode
        cls.raw = p.stdout.decode()
        cls.err = p.stderr.decode()
        cls.steps = {}
        cls.describe = {}
        for line in cls.raw.splitlines():
            obj = json.loads(line)
            if obj["step"] == "describe":
                cls.describe[obj["interface"]] = obj
            else:
                cls.steps[obj["step"]] = obj

    @classmethod
    def tearDownClass(cls):
        cls.testd.stop()

    def step(self, name):
        self.assertIn(name, self.steps, "goclient did not get to step %r:\n%s\n%s" % (name, self.raw, self.err))
        return self.steps[name]

    def test_exit_status(self):
        self.assertEqual(self.rc, 0, self.err)

    def test_get_info(self):
        s = self.step("info")
        self.assertNotIn("failed", s)
        self.assertEqual(s["vendor"], "halyard")
        self.assertEqual(s["product"], "halyard-testd")
        self.assertEqual(s["version"], harness.project_version())
        self.assertEqual(s["url"], "")
        self.assertEqual(sorted(s["interfaces"]), ["io.halyard.Test", "org.varlink.service"])

    def test_service_interface_parses(self):
        d = self.describe.get("org.varlink.service")
        self.assertIsNotNone(d, self.raw)
        self.assertNotIn("parseError", d)
        self.assertFalse(d["parsedLowercased"])
        self.assertEqual(d["name"], "org.varlink.service")
        self.assertEqual(sorted(d["methods"]), ["GetInfo", "GetInterfaceDescription"])
        self.assertEqual(d["methods"]["GetInfo"]["out"], {"vendor": "string", "product": "string",
                                                          "version": "string", "url": "string",
                                                          "interfaces": "array"})
        self.assertEqual(d["methods"]["GetInterfaceDescription"]["in"], {"interface": "string"})
        self.assertEqual(sorted(d["errors"]), sorted(["InterfaceNotFound", "MethodNotFound", "MethodNotImplemented",
                                                      "InvalidParameter", "PermissionDenied", "ExpectedMore"]))

    def test_test_interface_parses(self):
        d = self.describe.get("io.halyard.Test")
        self.assertIsNotNone(d, self.raw)
        self.assertNotIn("parseError", d, "the Go IDL parser rejects io.halyard.Test: %s" % d.get("parseError"))
        if d["parsedLowercased"]:
            # Known limitation of github.com/varlink/go's idl package (lower-case
            # interface names only); the rest of the IDL must still parse.
            sys.stderr.write("[note: Go idl parser needed the interface name lower-cased] ")
        self.assertEqual(d["description"], harness.TEST_IDL.read_text())
        self.assertEqual(sorted(d["methods"]), ["Echo", "GetStatus", "Log", "Ping", "ReadFd", "Sleep", "Stream"])
        self.assertEqual(d["methods"]["Echo"], {"in": {"text": "string"}, "out": {"text": "string"}})
        self.assertEqual(d["methods"]["ReadFd"], {"in": {"fd": "int"}, "out": {"size": "int", "head": "string"}})
        self.assertEqual(d["methods"]["GetStatus"]["out"]["secretLoaded"], "bool")
        self.assertEqual(d["methods"]["Ping"], {"in": {}, "out": {}})
        self.assertEqual(d["errors"], ["Failed"])

    def test_unknown_interface_description(self):
        s = self.step("describe-unknown")
        self.assertEqual(s["failed"], {"error": "org.varlink.service.InterfaceNotFound",
                                       "parameters": {"interface": "org.example.nothere"}})

    def test_echo(self):
        self.assertEqual(self.step("echo"), {"step": "echo", "text": "grüße \u2603 \"quoted\" \\ /"})

    def test_stream_with_more(self):
        s = self.step("stream")
        self.assertNotIn("failed", s)
        self.assertEqual(s["indexes"], [0, 1, 2, 3])
        self.assertEqual(s["continues"], [True, True, True, False])

    def test_stream_without_more(self):
        self.assertEqual(self.step("stream-without-more")["failed"]["error"], "org.varlink.service.ExpectedMore")

    def test_oneway(self):
        s = self.step("oneway")
        self.assertIsNone(s["failed"])
        self.assertEqual(s["next"], "after-oneway")

    def test_unknown_method(self):
        self.assertEqual(self.step("unknown-method")["failed"],
                         {"error": "org.varlink.service.MethodNotFound",
                          "parameters": {"method": "io.halyard.Test.DoesNotExist"}})

    def test_missing_parameter(self):
        self.assertEqual(self.step("missing-parameter")["failed"],
                         {"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": "text"}})

    def test_connection_still_usable(self):
        s = self.step("status")
        self.assertIsNone(s["failed"])
        self.assertEqual(s["greeting"], "from-go")
        self.assertGreaterEqual(s["calls"], 10)


class HalyardctlAgainstGoServer(harness.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.path = cls.tmp / "org.example.goserver"
        cls.addr = "unix:%s" % cls.path
        cls.proc = harness.start_process([_build["binary"], "serve", cls.addr])
        wait_until(lambda: cls.proc.poll() is not None or harness.connectable(cls.path), 10,
                   what="the Go server")
        if cls.proc.poll() is not None:
            raise RuntimeError("goclient serve exited: %s" % cls.proc.stderr.read().decode())
        with harness.VarlinkConn(cls.path) as c:
            cls.idl = {}
            for name in ("org.example.goserver", "org.varlink.service"):
                r = c.call("org.varlink.service.GetInterfaceDescription", {"interface": name})
                cls.idl[name] = r["parameters"]["description"]

    @classmethod
    def tearDownClass(cls):
        harness.stop_process(cls.proc)
        cls.tmp.cleanup()

    def ok(self, r):
        self.assertEqual(r.rc, 0, r)
        return r

    def test_info(self):
        r = self.ok(halyardctl("info", self.addr))
        self.assertEqual(r.stdout,
                         "    Vendor: Example Go Vendor\n"
                         "   Product: goclient-server\n"
                         "   Version: 7.1\n"
                         "       URL: https://example.org/goserver\n"
                         "Interfaces: org.example.goserver\n"
                         "            org.varlink.service\n")

    def test_list_interfaces(self):
        r = self.ok(halyardctl("list-interfaces", self.path))
        self.assertEqual(r.stdout, "org.example.goserver\norg.varlink.service\n")

    def test_introspect(self):
        self.assertTrue(self.idl["org.example.goserver"].startswith("# A third-party interface"))
        r = self.ok(halyardctl("introspect", self.addr, "org.example.goserver"))
        self.assertEqual(r.stdout, self.idl["org.example.goserver"])
        # All: sorted, blank line between; the library's org.varlink.service
        # text has no final newline, halyardctl adds one.
        r = self.ok(halyardctl("introspect", self.addr))
        svc = self.idl["org.varlink.service"]
        self.assertEqual(r.stdout, self.idl["org.example.goserver"] + "\n" + svc + ("" if svc.endswith("\n") else "\n"))

    def test_introspect_unknown(self):
        r = halyardctl("introspect", self.addr, "org.example.nothere")
        self.assertEqual(r.rc, 1, r)
        # The Go library answers InvalidParameter here, not InterfaceNotFound.
        self.assertRegex(r.stderr, r"^Method call org\.varlink\.service\.GetInterfaceDescription\(\) failed: "
                                   r"org\.varlink\.service\.(InvalidParameter|InterfaceNotFound)\n$")

    def test_call(self):
        r = self.ok(halyardctl("call", self.addr, "org.example.goserver.Echo", '{"text":"to go ☃"}'))
        self.assertEqual(r.stdout, '{"text":"to go ☃"}\n')
        r = self.ok(halyardctl("call", self.addr, "org.example.goserver.Echo", input='{"text":"stdin"}'))
        self.assertEqual(r.stdout, '{"text":"stdin"}\n')
        r = self.ok(halyardctl("--json=pretty", "call", self.addr, "org.example.goserver.Echo", '{"text":"p"}'))
        self.assertEqual(r.stdout, '{\n  "text": "p"\n}\n')

    def test_call_more(self):
        r = self.ok(halyardctl("call", "--more", self.addr, "org.example.goserver.Count", '{"n":3}'))
        self.assertEqual(r.stdout,
                         RS + '{"i":0,"item":{"name":"item0","size":0}}\n' +
                         RS + '{"i":1,"item":{"name":"item1","size":10}}\n' +
                         RS + '{"i":2,"item":{"name":"item2","size":20}}\n')

    def test_call_errors(self):
        r = halyardctl("call", self.addr, "org.example.goserver.Fail", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.stderr, "Method call org.example.goserver.Fail() failed: org.example.goserver.Broken\n")
        self.assertEqual(json.loads(r.stdout), {"reason": "on purpose"})
        r = halyardctl("call", self.addr, "org.example.goserver.Count", '{"n":2}')
        self.assertEqual(r.rc, 1, r)
        self.assertIn("org.example.goserver.WantsMore", r.stderr)
        r = halyardctl("call", self.addr, "org.example.goserver.Nope", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertIn("org.varlink.service.MethodNotFound", r.stderr)
        r = halyardctl("call", self.addr, "org.example.goserver.Echo", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(json.loads(r.stdout), {"parameter": "text"})

    def test_call_oneway(self):
        r = self.ok(halyardctl("call", "--oneway", self.addr, "org.example.goserver.Echo", '{"text":"x"}'))
        self.assertEqual((r.stdout, r.stderr), ("", ""))
        self.assertIsNone(self.proc.poll())
        self.ok(halyardctl("call", self.addr, "org.example.goserver.Echo", '{"text":"x"}'))


class HalyardctlAgainstGoServerWithoutUrl(harness.TestCase):
    def test_info_with_fields_left_out(self):
        # The Go library leaves empty GetInfo fields out of the reply
        # (omitempty): an empty URL means no "url" key at all.
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        path = tmp / "org.example.goserver"
        proc = harness.start_process([_build["binary"], "serve-no-url", "unix:%s" % path])
        wait_until(lambda: proc.poll() is not None or harness.connectable(path), 10, what="the Go server")
        with harness.VarlinkConn(path) as c:
            self.assertNotIn("url", c.call("org.varlink.service.GetInfo", {})["parameters"])
        r = halyardctl("info", path)
        self.assertEqual(r.rc, 0, r)
        self.assertNotIn("(null)", r.stdout)
        self.assertRegex(r.stdout, r"(?m)^       URL: ?$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
