#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""chat-rest: routing (404/405/HEAD), /metrics, concurrency, and the
daemon itself: flags, --config, the defaults file, failing loudly on bad
configuration, clean stop on SIGTERM/SIGINT. Messages are seeded over MQTT.
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatstack import BUILD_DIR, SLOW, Stack, free_port, main  # noqa: E402

EXE = os.path.join(BUILD_DIR, "chat-rest")


def raw_http(url, method="GET", path="/", token=None, body=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url + path, method=method, headers=h, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Routing(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = s = Stack(rest=True, users={"alice": "pw-a", "bob": "pw-b"},
                          rest_args=["--login-rate-user", "1000", "--login-rate-addr", "1000"])
        s.start()
        try:
            a = s.client("alice", "pw-a")
            b = s.client("bob", "pw-b")
            for i in range(8):
                a.publish("chat/dm/bob", {"cid": "m%d" % i, "body": "m %d" % i})
            b.wait_event("msg", body="m 7")
            cls.ta = s.login("alice", "pw-a")
        except BaseException:
            s.stop(check=False)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def req(self, method, path, token=None, body=None):
        return raw_http(self.s.rest_url, method, path, token, body)

    def test_unknown_paths_are_json_404(self):
        for path in ("/", "/v1", "/v1/inbox/", "/v2/inbox", "/v1/conversations/alice",
                     "/v1/conversations/alice/messages/x", "/v1/groups//messages", "/healthz/x"):
            for tok in (None, self.ta):
                st, hdrs, raw = self.req("GET", path, tok)
                self.assertEqual(st, 404, path)
                self.assertEqual(hdrs.get("Content-Type"), "application/json")
                self.assertEqual(json.loads(raw)["error"], "not_found")

    def test_wrong_methods_are_405(self):
        for method, path, allow in (("POST", "/v1/inbox", "GET, HEAD"),
                                    ("DELETE", "/v1/conversations", "GET, HEAD"),
                                    ("PUT", "/healthz", "GET, HEAD"),
                                    ("POST", "/v1/groups/g/messages", "GET, HEAD"),
                                    ("GET", "/v1/login", "POST"),
                                    ("PATCH", "/v1/login", "POST")):
            st, hdrs, raw = self.req(method, path, self.ta, body={} if method != "GET" else None)
            self.assertEqual(st, 405, (method, path, raw))
            self.assertEqual(hdrs.get("Allow"), allow)
            self.assertEqual(json.loads(raw)["error"], "method_not_allowed")

    def test_head_and_get_with_body(self):
        st, hdrs, raw = self.req("HEAD", "/healthz")
        self.assertEqual((st, raw), (200, b""))
        st, _, raw = self.req("GET", "/v1/inbox", self.ta, body=b"ignored")
        self.assertEqual(st, 200, raw)

    def test_token_needed_except_health_and_metrics(self):
        for path in ("/healthz", "/metrics"):
            self.assertEqual(self.req("GET", path)[0], 200)
        for path in ("/v1/inbox", "/v1/conversations", "/v1/conversations/bob/messages",
                     "/v1/groups/g/messages", "/v1/presence?users=bob"):
            st, _, raw = self.req("GET", path)
            self.assertEqual((st, json.loads(raw)["error"]), (401, "unauthorized"), path)

    def test_metrics(self):
        self.s.sql("INSERT INTO plugin_stats (name, value) VALUES ('rest_test_gauge', 42),"
                   " ('weird-name.x', 7) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")
        for _ in range(3):
            self.req("GET", "/v1/inbox", self.ta)
        self.req("GET", "/nope")
        st, hdrs, raw = self.req("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(hdrs.get("Content-Type", "").startswith("text/plain; version=0.0.4"))
        text = raw.decode()
        series = {}
        for line in text.splitlines():
            if line.startswith("#"):
                self.assertRegex(line, r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ")
                continue
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) '
                         r'(-?[0-9.e+]+)$', line)
            self.assertIsNotNone(m, line)
            series[m.group(1)] = float(m.group(2))
        self.assertGreaterEqual(series['chat_rest_requests_total{route="inbox",status="200"}'], 3)
        self.assertGreaterEqual(series['chat_rest_requests_total{route="unmatched",status="404"}'], 1)
        self.assertGreaterEqual(series['chat_rest_requests_total{route="login",status="200"}'], 1)
        count = series['chat_rest_request_duration_seconds_count{route="inbox"}']
        self.assertEqual(series['chat_rest_request_duration_seconds_bucket{route="inbox",le="+Inf"}'],
                         count)
        buckets = [v for k, v in series.items()
                   if k.startswith('chat_rest_request_duration_seconds_bucket{route="inbox"')]
        self.assertEqual(buckets, sorted(buckets))
        self.assertIn('chat_rest_request_duration_seconds_sum{route="inbox"}', series)
        self.assertIn("chat_rest_db_errors_total", series)
        self.assertEqual(series["chat_rest_db_up"], 1)
        self.assertEqual(series["chat_plugin_rest_test_gauge"], 42)
        self.assertEqual(series["chat_plugin_weird_name_x"], 7)
        self.assertIn("# TYPE chat_plugin_rest_test_gauge gauge", text)

    def test_concurrent_requests(self):
        paths = ["/v1/inbox", "/v1/conversations", "/v1/conversations/bob/messages?limit=3",
                 "/v1/presence?users=alice,bob", "/healthz"] * 30

        def one(p):
            return self.req("GET", p, self.ta)[0]
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
            codes = list(ex.map(one, paths))
        self.assertEqual(codes, [200] * len(paths))


class Daemon(unittest.TestCase):
    """chat-rest started by hand next to a stack (its database and secret)."""

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(rest=True, users={"alice": "pw-a"}).start()
        cls.tmp = tempfile.mkdtemp(prefix="rest-misc-")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        for f in os.listdir(cls.tmp):
            os.unlink(os.path.join(cls.tmp, f))
        os.rmdir(cls.tmp)

    def write(self, name, text):
        p = os.path.join(self.tmp, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def env(self, **extra):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CHAT_CONFIG"))}
        # an empty defaults file: nothing leaks in from run/chat.conf
        e["CHAT_CONFIG"] = self.write("empty.conf", "")
        e.update(extra)
        return e

    def fails(self, args, want, env=None):
        r = subprocess.run([EXE] + args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=env or self.env(), timeout=30 * SLOW)
        self.assertEqual(r.returncode, 1, (args, r.stdout, r.stderr))
        self.assertIn(want, r.stderr, args)
        self.assertNotIn("Sanitizer", r.stderr)

    def start(self, args, env=None, port=None):
        """Start chat-rest; return (process, base url) once /healthz answers."""
        p = subprocess.Popen([EXE] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env or self.env())
        url = "http://127.0.0.1:%d" % port
        deadline = time.monotonic() + 20 * SLOW
        while time.monotonic() < deadline:
            if p.poll() is not None:
                self.fail("chat-rest exited: %s" % p.stdout.read().decode())
            try:
                if raw_http(url, "GET", "/healthz")[0] == 200:
                    return p, url
            except OSError:
                pass
            time.sleep(0.1)
        p.kill()
        self.fail("chat-rest did not come up")

    def stop(self, p, sig=signal.SIGTERM):
        p.send_signal(sig)
        out = p.communicate(timeout=20 * SLOW)[0].decode()
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("stopping", out)
        self.assertNotIn("Sanitizer", out)
        return out

    def base(self, port):
        return ["--listen", "127.0.0.1:%d" % port, "--db", self.s.conninfo,
                "--token-secret-file", self.s.secret_file]

    def test_bad_configuration_fails_loudly(self):
        port = free_port()
        b = self.base(port)
        short = self.write("short.secret", "too short\n")
        self.fails(b + ["--threads", "0"], "threads must be an integer")
        self.fails(b + ["--threads", "x"], "threads must be an integer")
        self.fails(b + ["--token-ttl", "-5"], "token_ttl_s must be an integer")
        self.fails(b + ["--max-limit", "0"], "max_limit must be an integer")
        self.fails(b + ["--login-rate-user", "lots"], "login_rate_user must be an integer")
        self.fails(b + ["--listen", "nonsense"], "HOST:PORT")
        self.fails(b + ["--listen", "127.0.0.1:99999"], "port")
        self.fails(b + ["--listen", self.s.rest_url[len("http://"):]], "cannot listen")
        self.fails(b + ["--token-secret-file", "/nonexistent/secret"], "cannot read token secret file")
        self.fails(b + ["--token-secret-file", short], "must hold 32")
        self.fails(b + ["--db", "nonsense"], "bad database connection string")
        self.fails(b + ["--config", "/nonexistent/rest.conf"], "cannot read config file")
        self.fails(b + ["--config", self.write("k.conf", "threads = 2\ncolour = blue\n")],
                   'unknown key "colour"')
        self.fails(b + ["--config", self.write("l.conf", "threads = 2\njust words\n")], "line 2")
        self.fails(b + ["extra"], "unexpected argument")
        r = subprocess.run([EXE, "--bogus"], capture_output=True, text=True, env=self.env())
        self.assertEqual(r.returncode, 1)
        self.assertIn("usage:", r.stderr)
        # no secret anywhere
        self.fails(["--listen", "127.0.0.1:%d" % port, "--db", self.s.conninfo], "no token secret")
        # a named defaults file that cannot be read
        self.fails(b, "cannot read defaults file", env=self.env(CHAT_CONFIG="/nonexistent/chat.conf"))

    def test_help_and_print_sql(self):
        r = subprocess.run([EXE, "--help"], capture_output=True, text=True, env=self.env())
        self.assertEqual(r.returncode, 0)
        self.assertIn("--token-secret-file", r.stdout)
        r = subprocess.run([EXE, "--print-sql"], capture_output=True, text=True, env=self.env())
        self.assertEqual(r.returncode, 0)
        self.assertIn("PREPARE chat_inbox AS", r.stdout)

    def test_config_file_and_flag_precedence(self):
        port = free_port()
        conf = self.write("rest.conf", "# chat-rest\nlisten = 127.0.0.1:%d\ndb = %s\n"
                          "token_secret_file = %s\nthreads = 2\ntoken_ttl_s = 120\nmax_limit = 7\n"
                          % (port, self.s.conninfo, self.s.secret_file))
        p, url = self.start(["--config", conf], port=port)
        try:
            st, _, raw = raw_http(url, "POST", "/v1/login", body={"user": "alice", "password": "pw-a"})
            self.assertEqual(st, 200, raw)
            self.assertAlmostEqual(json.loads(raw)["expires_at"], time.time() + 120, delta=30)
        finally:
            out = self.stop(p)
        self.assertIn("2 threads, max_limit 7, token ttl 120s", out)
        # flags beat the file
        p, url = self.start(["--config", conf, "--max-limit", "3", "--token-ttl", "60"], port=port)
        out = self.stop(p, signal.SIGINT)
        self.assertIn("max_limit 3, token ttl 60s", out)

    def test_defaults_file(self):
        port = free_port()
        defaults = self.write("chat.conf", "db = %s\ntoken_secret_file = %s\nrest_listen = 127.0.0.1:%d\n"
                              "some_other_tool_key = ignored\n"
                              % (self.s.conninfo, self.s.secret_file, port))
        p, url = self.start([], env=self.env(CHAT_CONFIG=defaults), port=port)
        try:
            # same secret as the stack's own chat-rest: its tokens work here
            st, _, raw = raw_http(url, "GET", "/v1/inbox", self.s.login("alice", "pw-a"))
            self.assertEqual(st, 200, raw)
        finally:
            self.stop(p)

    def test_starts_while_the_database_is_unreachable(self):
        port, dead = free_port(), free_port()
        p = subprocess.Popen([EXE, "--listen", "127.0.0.1:%d" % port,
                              "--db", "host=127.0.0.1 port=%d dbname=chat user=chat" % dead,
                              "--token-secret-file", self.s.secret_file],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=self.env())
        try:
            url = "http://127.0.0.1:%d" % port
            deadline = time.monotonic() + 20 * SLOW
            st = None
            while time.monotonic() < deadline:
                try:
                    st, _, raw = raw_http(url, "GET", "/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            self.assertEqual(st, 503)
            st, _, raw = raw_http(url, "GET", "/v1/inbox", self.s.token("alice"))
            self.assertEqual((st, json.loads(raw)["error"]), (503, "unavailable"))
            self.assertIsNone(p.poll())
        finally:
            out = self.stop(p)
        self.assertIn("not reachable yet", out)


if __name__ == "__main__":
    main()
