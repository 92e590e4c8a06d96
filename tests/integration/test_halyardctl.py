#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""halyardctl against a real halyard-testd: the varlinkctl-like verbs
(info, list-interfaces, introspect, call) and `status`."""

import json
import os
import re
import signal
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import halyardctl, wait_until  # noqa: E402

T = "io.halyard.Test."
RS = "\x1e"


def setUpModule():
    harness.check_binaries()


def tearDownModule():
    harness.kill_all()


class Verbs(harness.TestCase):
    """One testd under socket activation for the read-mostly verbs."""

    @classmethod
    def setUpClass(cls):
        cls.testd = harness.Testd(config="[Test]\nGreeting=ctl\n").start()
        cls.addr = cls.testd.address
        cls.path = str(cls.testd.socket)

    @classmethod
    def tearDownClass(cls):
        cls.testd.stop()

    def ok(self, r):
        self.assertEqual(r.rc, 0, r)
        return r

    # -- info, list-interfaces, introspect

    def test_info(self):
        r = self.ok(halyardctl("info", self.addr))
        self.assertEqual(r.stdout,
                         "    Vendor: halyard\n"
                         "   Product: halyard-testd\n"
                         "   Version: %s\n"
                         "       URL: \n"
                         "Interfaces: io.halyard.Test\n"
                         "            org.varlink.service\n" % harness.project_version())
        self.assertEqual(r.stderr, "")

    def test_info_json(self):
        r = self.ok(halyardctl("--json=short", "info", self.addr))
        self.assertEqual(r.stdout.count("\n"), 1)
        info = json.loads(r.stdout)
        self.assertEqual(info["product"], "halyard-testd")
        self.assertEqual(sorted(info["interfaces"]), ["io.halyard.Test", "org.varlink.service"])

    def test_list_interfaces(self):
        r = self.ok(halyardctl("list-interfaces", self.addr))
        self.assertEqual(r.stdout, "io.halyard.Test\norg.varlink.service\n")
        r = self.ok(halyardctl("--json=short", "list-interfaces", self.addr))
        self.assertEqual(json.loads(r.stdout), ["io.halyard.Test", "org.varlink.service"])

    def service_idl(self):
        with self.testd.connect() as c:
            return c.call("org.varlink.service.GetInterfaceDescription",
                          {"interface": "org.varlink.service"})["parameters"]["description"]

    def test_introspect_all(self):
        r = self.ok(halyardctl("introspect", self.addr))
        # Sorted by name, separated by an empty line, each as the service has it.
        self.assertEqual(r.stdout, harness.TEST_IDL.read_text() + "\n" + self.service_idl())

    def test_introspect_one(self):
        r = self.ok(halyardctl("introspect", self.addr, "io.halyard.Test"))
        self.assertEqual(r.stdout, harness.TEST_IDL.read_text())
        r = self.ok(halyardctl("introspect", self.addr, "org.varlink.service", "io.halyard.Test"))
        self.assertEqual(r.stdout, self.service_idl() + "\n" + harness.TEST_IDL.read_text())

    def test_introspect_json(self):
        r = self.ok(halyardctl("--json=short", "introspect", self.addr, "io.halyard.Test"))
        self.assertEqual(json.loads(r.stdout), [{"description": harness.TEST_IDL.read_text()}])

    def test_introspect_unknown_interface(self):
        r = halyardctl("introspect", self.addr, "io.halyard.Nope")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.stdout, "")
        self.assertIn("org.varlink.service.InterfaceNotFound", r.stderr)
        self.assertRegex(r.stderr, r"^Method call org\.varlink\.service\.GetInterfaceDescription\(\) failed: ")

    # -- call

    def test_call_with_json_argument(self):
        r = self.ok(halyardctl("call", self.addr, T + "Echo", '{"text": "hi ☃"}'))
        self.assertEqual(r.stdout, '{"text":"hi ☃"}\n')
        self.assertEqual(r.stderr, "")

    def test_call_parameters_from_stdin(self):
        r = self.ok(halyardctl("call", self.addr, T + "Echo", input='\n  {"text": "from stdin"}\n\n'))
        self.assertEqual(json.loads(r.stdout), {"text": "from stdin"})
        r = self.ok(halyardctl("call", self.addr, T + "Ping", input="{}"))
        self.assertEqual(r.stdout, "{}\n")

    def test_call_invalid_json_is_a_usage_error(self):
        for name, args, stdin in [("argument", ['{"text":'], None), ("not an object", ["[1]"], None),
                                  ("trailing data", ['{"text":"a"} {}'], None), ("stdin", [], "{nope"),
                                  ("empty stdin", [], "")]:
            with self.subTest(name):
                r = halyardctl("call", self.addr, T + "Echo", *args, input=stdin)
                self.assertEqual(r.rc, 2, r)
                self.assertEqual(r.stdout, "")
                self.assertIn("JSON object", r.stderr)

    def test_call_error_reply(self):
        r = halyardctl("call", self.addr, T + "Echo", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.stderr, "Method call io.halyard.Test.Echo() failed: org.varlink.service.InvalidParameter\n")
        self.assertEqual(json.loads(r.stdout), {"parameter": "text"})
        r = halyardctl("call", self.addr, "io.halyard.Test.Nope", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.stderr, "Method call io.halyard.Test.Nope() failed: org.varlink.service.MethodNotFound\n")
        self.assertEqual(json.loads(r.stdout), {"method": "io.halyard.Test.Nope"})

    def test_call_more_prints_json_seq(self):
        r = self.ok(halyardctl("call", "--more", self.addr, T + "Stream", '{"count": 3}'))
        self.assertEqual(r.stdout, RS + '{"index":0}\n' + RS + '{"index":1}\n' + RS + '{"index":2}\n')
        # JSON-SEQ stays compact whatever --json says.
        r = self.ok(halyardctl("--json=pretty", "call", "--more", self.addr, T + "Stream", '{"count": 2}'))
        self.assertEqual(r.stdout, RS + '{"index":0}\n' + RS + '{"index":1}\n')
        # A single-reply method with --more: one record.
        r = self.ok(halyardctl("call", "--more", self.addr, T + "Echo", '{"text":"x"}'))
        self.assertEqual(r.stdout, RS + '{"text":"x"}\n')

    def test_call_more_error(self):
        r = halyardctl("call", "--more", self.addr, T + "Stream", '{"count": 0}')
        self.assertEqual(r.rc, 1, r)
        self.assertIn("failed: org.varlink.service.InvalidParameter", r.stderr)
        self.assertEqual(r.stdout, RS + '{"parameter":"count"}\n')

    def test_call_without_more_on_a_streaming_method(self):
        r = halyardctl("call", self.addr, T + "Stream", '{"count": 3}')
        self.assertEqual(r.rc, 1, r)
        self.assertIn("org.varlink.service.ExpectedMore", r.stderr)

    def test_call_oneway(self):
        qid = "ONEWAY%d" % os.getpid()
        r = self.ok(halyardctl("call", "--oneway", self.addr, T + "Log", '{"queueId":"%s","message":"m"}' % qid))
        self.assertEqual((r.stdout, r.stderr), ("", ""))
        # The call had its effect: testd logged it.
        self.testd.wait_stderr("<6>%s: m" % qid, 5)
        # Even a failing oneway call prints nothing and exits 0 (no reply).
        # GetStatus.calls shows testd got it: poll #j returns c0 + j + 1
        # once the oneway call has been handled.
        c = self.connect(self.testd)
        c0 = c.call(T + "GetStatus", {})["parameters"]["calls"]
        r = self.ok(halyardctl("call", "--oneway", self.addr, T + "Log", '{"queueId":"bad id!","message":"m"}'))
        self.assertEqual((r.stdout, r.stderr), ("", ""))
        polls = [0]

        def handled():
            polls[0] += 1
            return c.call(T + "GetStatus", {})["parameters"]["calls"] - c0 - polls[0] == 1
        wait_until(handled, 5, 0.02, "the oneway call to be counted")
        self.assertNotIn("bad id!", self.testd.stderr())

    def test_more_and_oneway_together(self):
        r = halyardctl("call", "--more", "--oneway", self.addr, T + "Ping", "{}")
        self.assertEqual(r.rc, 2, r)

    def test_json_modes(self):
        r = self.ok(halyardctl("--json=pretty", "call", self.addr, T + "GetStatus", "{}"))
        self.assertGreater(r.stdout.count("\n"), 5)
        self.assertRegex(r.stdout, r'(?m)^  "greeting": "ctl",?$')
        pretty = json.loads(r.stdout)
        r = self.ok(halyardctl("--json=short", "call", self.addr, T + "GetStatus", "{}"))
        self.assertEqual(r.stdout.count("\n"), 1)
        short = json.loads(r.stdout)
        self.assertEqual(set(pretty), set(short))
        self.assertEqual(short["greeting"], "ctl")
        # Not a terminal and no --json: compact.
        r = self.ok(halyardctl("call", self.addr, T + "Echo", '{"text":"x"}'))
        self.assertEqual(r.stdout, '{"text":"x"}\n')
        r = halyardctl("--json=yaml", "call", self.addr, T + "Ping", "{}")
        self.assertEqual(r.rc, 2, r)

    def test_quiet(self):
        r = self.ok(halyardctl("-q", "call", self.addr, T + "Echo", '{"text":"x"}'))
        self.assertEqual((r.stdout, r.stderr), ("", ""))
        r = self.ok(halyardctl("--quiet", "call", "--more", self.addr, T + "Stream", '{"count":2}'))
        self.assertEqual(r.stdout, "")
        r = halyardctl("-q", "call", self.addr, T + "Echo", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertEqual(r.stdout, "")
        self.assertIn("InvalidParameter", r.stderr)

    def test_timeout(self):
        r = halyardctl("--timeout=1", "call", self.addr, T + "Sleep", '{"ms": 5000}')
        self.assertEqual(r.rc, 1, r)
        self.assertIn("timed out", r.stderr)
        self.assertLess(r.elapsed, 3.5)

    def test_address_forms(self):
        for addr in (self.addr, self.path):
            with self.subTest(addr):
                r = self.ok(halyardctl("call", addr, T + "Echo", '{"text":"form"}'))
                self.assertEqual(r.stdout, '{"text":"form"}\n')

    def test_relative_path(self):
        cwd = os.getcwd()
        os.chdir(os.path.dirname(self.path))
        self.addCleanup(os.chdir, cwd)
        r = self.ok(halyardctl("call", "./" + os.path.basename(self.path), T + "Echo", '{"text":"rel"}'))
        self.assertEqual(r.stdout, '{"text":"rel"}\n')

    def test_unsupported_address(self):
        for addr in ("tcp:127.0.0.1:1", "ssh-unix:host:/x", "io.halyard.Test"):
            with self.subTest(addr):
                r = halyardctl("call", addr, T + "Ping", "{}")
                self.assertEqual(r.rc, 1, r)
                self.assertIn("Unsupported address", r.stderr)
                self.assertIn(addr, r.stderr)

    def test_unreachable(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        r = halyardctl("call", "unix:%s" % (tmp / "nothing"), T + "Ping", "{}")
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.stderr, r"^Failed to connect to unix:/\S+/nothing: No such file or directory\n$")
        # A socket nobody listens on.
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp / "stale"))
        s.close()
        r = halyardctl("info", str(tmp / "stale"))
        self.assertEqual(r.rc, 1, r)
        self.assertIn("Connection refused", r.stderr)

    def test_usage_errors(self):
        for args in [(), ("frobnicate",), ("info",), ("info", self.addr, "extra"), ("call", self.addr),
                     ("--no-such-option", "info", self.addr)]:
            with self.subTest(args=args):
                r = halyardctl(*args)
                self.assertEqual(r.rc, 2, r)
        r = self.ok(halyardctl("--version"))
        self.assertIn(harness.project_version(), r.stdout)


class Status(harness.TestCase):
    def test_status_table(self):
        t = self.start_testd(config="[Test]\nGreeting=st\n")
        r = halyardctl("status", "--runtime-dir", t.tmp.path)
        self.assertEqual(r.rc, 3, r)
        lines = r.stdout.splitlines()
        self.assertRegex(lines[0], r"^SERVICE\s+STATE\s+DETAIL$")
        rows = {l.split()[0]: l for l in lines[1:]}
        self.assertEqual(sorted(rows), ["arcd", "queued", "smtpd", "test", "tlsrptd"])
        for name in ("smtpd", "arcd", "queued", "tlsrptd"):
            self.assertRegex(rows[name], r"^%s\s+not running\s+" % name)
        self.assertRegex(rows["test"], r"^test\s+running\s+\d+ connections, \d+ calls$")
        # The known services come first, in their fixed order.
        self.assertEqual([l.split()[0] for l in lines[1:5]], ["smtpd", "arcd", "queued", "tlsrptd"])

    def test_status_runtime_dir_from_environment(self):
        t = self.start_testd()
        r = halyardctl("status", env={"HALYARD_RUNTIME_DIR": str(t.tmp.path)})
        self.assertEqual(r.rc, 3, r)
        self.assertRegex(r.stdout, r"(?m)^test\s+running\s")

    def test_status_json(self):
        t = self.start_testd(config="[Test]\nGreeting=json\n")
        for opt in ("--json=short", "--json=pretty", "-j"):
            with self.subTest(opt):
                r = halyardctl(opt, "status", "--runtime-dir", t.tmp.path)
                self.assertEqual(r.rc, 3, r)
                entries = json.loads(r.stdout)
                self.assertIsInstance(entries, list)
                for e in entries:
                    self.assertIn("service", e)
                    self.assertIn("state", e)
                by = {e["service"]: e for e in entries}
                self.assertEqual(by["test"]["state"], "running")
                self.assertEqual(by["test"]["status"]["greeting"], "json")
                self.assertEqual(by["test"]["interface"], "io.halyard.Test")
                for name in ("smtpd", "arcd", "queued", "tlsrptd"):
                    self.assertEqual(by[name]["state"], "not running")

    def test_status_stale_socket_is_not_running(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp / "io.halyard.Stale"))
        s.close()
        r = halyardctl("status", "--runtime-dir", tmp.path)
        self.assertEqual(r.rc, 3, r)
        self.assertRegex(r.stdout, r"(?m)^stale\s+not running\s")

    def test_status_not_answering(self):
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        t = harness.Testd(tmp=tmp)
        self.addCleanup(t.stop)
        t.start()
        hung = harness.SilentServer(tmp / "io.halyard.Hung")
        self.addCleanup(hung.stop)
        r = halyardctl("status", "--runtime-dir", tmp.path, timeout=20)
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.stdout, r"(?m)^hung\s+not answering\s")
        self.assertRegex(r.stdout, r"(?m)^test\s+running\s")
        # Asked in parallel, bounded by the 5 s status timeout.
        self.assertLess(r.elapsed, 7.5)
        self.assertGreater(r.elapsed, 4)

    def test_status_honours_timeout_option(self):
        # --help: "--timeout=SECONDS  Give up on a call after this long
        # (default 45, status 5)".
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        hung = harness.SilentServer(tmp / "io.halyard.Hung")
        self.addCleanup(hung.stop)
        r = halyardctl("--timeout=1", "status", "--runtime-dir", tmp.path, timeout=20)
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.stdout, r"(?m)^hung\s+not answering\s")
        self.assertLess(r.elapsed, 3, "--timeout=1 ignored by status (took %.1f s)" % r.elapsed)

    def test_status_failed_service(self):
        # A socket whose service answers GetStatus with an error: "failed", exit 1.
        tmp = harness.TempDir()
        self.addCleanup(tmp.cleanup)
        t = harness.Testd(activate=False, socket_name="io.halyard.Other", tmp=tmp)
        self.addCleanup(t.stop)
        t.start()
        r = halyardctl("status", "--runtime-dir", tmp.path)
        self.assertEqual(r.rc, 1, r)
        self.assertRegex(r.stdout, r"(?m)^other\s+failed\s+org\.varlink\.service\.InterfaceNotFound")

    def test_status_while_draining_service_refuses(self):
        t = self.start_testd()
        c = self.connect(t)
        self.assertEqual(c.call(T + "Ping", {}), {"parameters": {}})
        t.signal(signal.SIGTERM)
        wait_until(lambda: c.call(T + "GetStatus", {})["parameters"]["draining"], 3, 0.02, "draining")
        r = halyardctl("status", "--runtime-dir", t.tmp.path)
        self.assertEqual(r.rc, 3, r)
        self.assertRegex(r.stdout, r"(?m)^test\s+not running\s+connect: Connection refused$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
