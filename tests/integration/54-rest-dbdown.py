#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""chat-rest while PostgreSQL is down: 503 `unavailable` (quickly, with
Retry-After) for everything that needs the database, /healthz 503,
/metrics still served, bad tokens still 401; the daemon stays up and
recovers by itself when the server is back (after a clean stop and after
a crash-like immediate stop). Uses its own PostgreSQL cluster; the
conversation is seeded over MQTT.
"""
import json
import os
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatstack import Stack, main  # noqa: E402


def raw_http(s, method, path, token=None, body=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(s.rest_url + path, method=method, headers=h, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class DatabaseDown(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = s = Stack(rest=True, own_pg=True, users={"alice": "pw-a", "bob": "pw-b"},
                          rest_args=["--login-rate-user", "1000", "--login-rate-addr", "1000"])
        s.start()
        try:
            a = s.client("alice", "pw-a")
            b = s.client("bob", "pw-b")
            a.publish("chat/dm/bob", {"cid": "c1", "body": "before the outage"})
            b.wait_event("msg", body="before the outage")
            cls.tb = s.login("bob", "pw-b")
        except BaseException:
            s.stop(check=False)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def metric(self, name):
        st, _, raw = raw_http(self.s, "GET", "/metrics")
        self.assertEqual(st, 200)
        for line in raw.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def check_down(self):
        s = self.s
        st, hdrs, raw = raw_http(s, "GET", "/healthz")
        self.assertEqual(st, 503, raw)
        self.assertEqual(json.loads(raw)["db"], "down")
        for path in ("/v1/inbox", "/v1/conversations", "/v1/conversations/alice/messages",
                     "/v1/presence?users=alice"):
            t = time.monotonic()
            st, hdrs, raw = raw_http(s, "GET", path, self.tb)
            self.assertLess(time.monotonic() - t, 3.0, "503 should come fast")
            self.assertEqual(st, 503, (path, raw))
            self.assertEqual(json.loads(raw), {"error": "unavailable", "reason": json.loads(raw)["reason"]})
            self.assertGreaterEqual(int(hdrs.get("Retry-After", "0")), 1)
        st, _, raw = raw_http(s, "POST", "/v1/login", body={"user": "bob", "password": "pw-b"})
        self.assertEqual((st, json.loads(raw)["error"]), (503, "unavailable"))
        # no database needed to refuse a bad token
        st, _, raw = raw_http(s, "GET", "/v1/inbox", "not.a.token")
        self.assertEqual(st, 401, raw)
        self.assertEqual(self.metric("chat_rest_db_up"), 0)
        self.assertGreater(self.metric("chat_rest_db_errors_total"), 0)
        self.assertIsNone(s.rest.poll(), "chat-rest exited while the database was down")

    def check_recovers(self):
        deadline = time.monotonic() + 30
        while True:
            st, _, raw = raw_http(self.s, "GET", "/healthz")
            if st == 200:
                break
            self.assertLess(time.monotonic(), deadline, "no recovery: %s %s" % (st, raw))
            time.sleep(0.2)
        self.assertEqual(json.loads(raw), {"status": "ok", "db": "ok"})
        st, _, raw = raw_http(self.s, "GET", "/v1/inbox", self.tb)
        self.assertEqual(st, 200, raw)
        self.assertEqual([e["body"] for e in json.loads(raw)["events"]], ["before the outage"])
        self.s.login("bob", "pw-b")
        self.assertEqual(self.metric("chat_rest_db_up"), 1)

    def test_outages(self):
        st, _, _ = raw_http(self.s, "GET", "/healthz")
        self.assertEqual(st, 200)
        for mode in ("fast", "immediate"):
            with self.subTest(mode=mode):
                self.s.stop_postgres(mode)
                try:
                    self.check_down()
                    time.sleep(1.5)  # still down a while later, still serving
                    self.check_down()
                finally:
                    self.s.start_postgres()
                self.check_recovers()


if __name__ == "__main__":
    main()
