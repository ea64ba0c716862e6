#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""chat-rest: POST /v1/login, Bearer tokens and login rate limits.

The real stack (broker + plugin + PostgreSQL + chat-rest). Users come
from `chatctl user add`; tokens are also forged here with the stack's
secret file to test expiry, algorithms and signatures.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatstack import Stack, main  # noqa: E402


# ---- helpers (each 5x-rest file carries its own copy) ----------------------

def raw_http(s, method, path, body=None, token=None, headers=None):
    """(status, headers, raw bytes) from chat-rest."""
    h = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if token is not None:
        h["Authorization"] = "Bearer " + token
    req = urllib.request.Request(s.rest_url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def secret_of(s):
    with open(s.secret_file, "rb") as f:
        return f.read().rstrip(b"\r\n")


def make_token(key, header, payload):
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    p = b64u(json.dumps(payload, separators=(",", ":")).encode())
    sig = hmac.new(key, (h + "." + p).encode(), hashlib.sha256).digest()
    return h + "." + p + "." + b64u(sig)


class RestCase(unittest.TestCase):
    users = {}
    rest_args = ()

    @classmethod
    def setUpClass(cls):
        cls.s = Stack(rest=True, users=cls.users, rest_args=list(cls.rest_args)).start()

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def assertError(self, status, body, want_status, code):
        self.assertEqual(status, want_status, body)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(set(body), {"error", "reason"}, body)
        self.assertEqual(body["error"], code, body)
        self.assertIsInstance(body["reason"], str)
        self.assertTrue(body["reason"])

    def post_login(self, user, password):
        return self.s.http("POST", "/v1/login", {"user": user, "password": password})


# ---- login ------------------------------------------------------------------

class Login(RestCase):
    users = {"alice": "pw-alice", "bob": "pw-bob", "dave": "pw-dave"}
    rest_args = ("--token-ttl", "3600", "--login-rate-user", "1000", "--login-rate-addr", "1000")

    def test_login_issues_a_working_token(self):
        st, hdrs, raw = raw_http(self.s, "POST", "/v1/login", {"user": "alice", "password": "pw-alice"})
        self.assertEqual(st, 200, raw)
        self.assertEqual(hdrs.get("Content-Type"), "application/json")
        self.assertEqual(hdrs.get("Cache-Control"), "no-store")
        body = json.loads(raw)
        self.assertEqual(set(body), {"token", "expires_at"})
        self.assertIsInstance(body["expires_at"], int)
        self.assertAlmostEqual(body["expires_at"], time.time() + 3600, delta=30)
        hdr, payload, _ = body["token"].split(".")
        self.assertEqual(json.loads(base64.urlsafe_b64decode(hdr + "==")).get("alg"), "HS256")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        self.assertEqual(claims["sub"], "alice")
        self.assertEqual(claims["exp"], body["expires_at"])
        st, inbox = self.s.http("GET", "/v1/inbox", token=body["token"])
        self.assertEqual(st, 200, inbox)
        # the same token is an MQTT password (Identity in the contract)
        self.assertEqual(self.s.connect_raw("alice", body["token"], "alice:tok"), 0)

    def test_login_refreshes_the_verifier(self):
        self.s.sql("UPDATE users SET verifier = NULL WHERE id = 'bob'")
        self.s.login("bob", "pw-bob")
        (v,), = self.s.sql("SELECT verifier FROM users WHERE id = 'bob'")
        self.assertRegex(v, r"^[0-9a-f]{16}\$[0-9a-f]{64}$")
        # made with another key: replaced by one under the current key
        self.s.sql("UPDATE users SET verifier = %s WHERE id = 'bob'", ("0" * 16 + "$" + "0" * 64,))
        self.s.login("bob", "pw-bob")
        (v2,), = self.s.sql("SELECT verifier FROM users WHERE id = 'bob'")
        self.assertEqual(v2, v)
        # and the broker accepts the password again
        self.s.wait_user("bob", "pw-bob")

    def test_wrong_password_and_unknown_user_look_the_same(self):
        def timed(user, pw):
            t = time.monotonic()
            st, body = self.post_login(user, pw)
            return st, body, time.monotonic() - t

        wrong = [timed("alice", "nope") for _ in range(3)]
        unknown = [timed("nosuchuser", "nope") for _ in range(3)]
        for st, body, _ in wrong + unknown:
            self.assertError(st, body, 401, "unauthorized")
        self.assertEqual(wrong[0][1], unknown[0][1])
        # the unknown user still pays for a PBKDF2 check
        t_wrong = sorted(t for _, _, t in wrong)[1]
        t_unknown = sorted(t for _, _, t in unknown)[1]
        self.assertGreater(t_unknown, t_wrong * 0.5, (t_wrong, t_unknown))

    def test_disabled_user(self):
        tok = self.s.token("dave")
        self.s.sql("UPDATE users SET disabled = true WHERE id = 'dave'")
        try:
            st, body = self.post_login("dave", "pw-dave")
            self.assertError(st, body, 403, "forbidden")
            st, body = self.post_login("dave", "wrong")
            self.assertError(st, body, 401, "unauthorized")
            st, body = self.s.http("GET", "/v1/inbox", token=tok)
            self.assertError(st, body, 401, "unauthorized")
        finally:
            self.s.sql("UPDATE users SET disabled = false WHERE id = 'dave'")

    def test_bad_requests(self):
        cases = [
            b"{not json",
            b"[]",
            b'"alice"',
            json.dumps({"user": "alice"}).encode(),
            json.dumps({"password": "x"}).encode(),
            json.dumps({"user": "alice", "password": 5}).encode(),
            json.dumps({"user": "a/b", "password": "x"}).encode(),
            json.dumps({"user": "", "password": "x"}).encode(),
            json.dumps({"user": "x" * 65, "password": "x"}).encode(),
            b'{"user":"alice","user":"bob","password":"x"}',
            b"",
        ]
        for raw in cases:
            st, body = self.s.http("POST", "/v1/login", raw)
            self.assertError(st, body, 400, "bad_request")

    def test_body_too_large(self):
        big = json.dumps({"user": "alice", "password": "x" * (70 * 1024)}).encode()
        st, body = self.s.http("POST", "/v1/login", big)
        self.assertError(st, body, 413, "too_large")
        # the same without a Content-Length (chunked upload)
        c = http.client.HTTPConnection("127.0.0.1", self.s.rest_port, timeout=30)
        try:
            c.putrequest("POST", "/v1/login")
            c.putheader("Content-Type", "application/json")
            c.putheader("Transfer-Encoding", "chunked")
            c.endheaders()
            for i in range(0, len(big), 8192):
                chunk = big[i:i + 8192]
                c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            c.send(b"0\r\n\r\n")
            r = c.getresponse()
            self.assertError(r.status, json.loads(r.read()), 413, "too_large")
        finally:
            c.close()
        # a body just under the limit is read
        ok = json.dumps({"user": "alice", "password": "pw-alice", "pad": "y" * 60000}).encode()
        st, body = self.s.http("POST", "/v1/login", ok)
        self.assertEqual(st, 200, body)

    def test_wrong_method(self):
        st, hdrs, raw = raw_http(self.s, "GET", "/v1/login")
        self.assertError(st, json.loads(raw), 405, "method_not_allowed")
        self.assertEqual(hdrs.get("Allow"), "POST")


# ---- bearer tokens -------------------------------------------------------------

class Tokens(RestCase):
    users = {"alice": "pw-alice", "erin": "pw-erin"}
    rest_args = ("--login-rate-user", "1000", "--login-rate-addr", "1000")

    def get_inbox(self, auth):
        return raw_http(self.s, "GET", "/v1/inbox", headers={"Authorization": auth} if auth else {})

    def assert401(self, auth, reason_has=None):
        st, hdrs, raw = self.get_inbox(auth)
        body = json.loads(raw)
        self.assertError(st, body, 401, "unauthorized")
        self.assertEqual(hdrs.get("WWW-Authenticate"), "Bearer")
        if reason_has:
            self.assertIn(reason_has, body["reason"])
        return body

    def test_good_tokens(self):
        for tok in (self.s.login("alice", "pw-alice"), self.s.token("alice")):
            st, _, raw = self.get_inbox("Bearer " + tok)
            self.assertEqual(st, 200, raw)
            st, _, raw = self.get_inbox("bearer   " + tok + "  ")
            self.assertEqual(st, 200, raw)

    def test_missing_or_malformed(self):
        self.assert401(None, "bearer")
        self.assert401("Basic YWxpY2U6cHctYWxpY2U=", "bearer")
        self.assert401("Bearer", "bearer")
        self.assert401("Bearer ", None)
        self.assert401("Bearer not-a-token", "malformed")
        self.assert401("Bearer a.b.c", "malformed")
        self.assert401("Bearer " + "x" * 600, "malformed")

    def test_forged_signature(self):
        now = int(time.time())
        other = make_token(os.urandom(48), {"alg": "HS256", "typ": "JWT"},
                           {"sub": "alice", "iat": now, "exp": now + 600})
        self.assert401("Bearer " + other, "signature")
        # payload swapped under a genuine signature
        good = self.s.token("erin")
        h, _, sig = good.split(".")
        p = b64u(json.dumps({"sub": "alice", "iat": now, "exp": now + 600}).encode())
        self.assert401("Bearer %s.%s.%s" % (h, p, sig), "signature")

    def test_alg_none_and_others(self):
        now = int(time.time())
        claims = {"sub": "alice", "iat": now, "exp": now + 600}
        h = b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        p = b64u(json.dumps(claims).encode())
        self.assert401("Bearer %s.%s." % (h, p), None)
        body = self.assert401("Bearer %s.%s.%s" % (h, p, b64u(b"x" * 32)), None)
        self.assertIn("HS256", body["reason"])
        key = secret_of(self.s)
        for alg in ("HS512", "RS256", "hs256"):
            self.assert401("Bearer " + make_token(key, {"alg": alg, "typ": "JWT"}, claims), "HS256")

    def test_expired(self):
        key = secret_of(self.s)
        now = int(time.time())
        tok = make_token(key, {"alg": "HS256", "typ": "JWT"},
                         {"sub": "alice", "iat": now - 100, "exp": now - 1})
        self.assert401("Bearer " + tok, "expired")
        # the same shape, still valid, passes: the test token maker is right
        tok = make_token(key, {"alg": "HS256", "typ": "JWT"},
                         {"sub": "alice", "iat": now, "exp": now + 100})
        st, _, raw = self.get_inbox("Bearer " + tok)
        self.assertEqual(st, 200, raw)

    def test_unknown_and_deleted_users(self):
        key = secret_of(self.s)
        now = int(time.time())
        ghost = make_token(key, {"alg": "HS256", "typ": "JWT"},
                           {"sub": "ghost", "iat": now, "exp": now + 100})
        self.assert401("Bearer " + ghost, "unknown")
        self.s.add_user("frank", "pw-frank", wait=False)
        tok = self.s.token("frank")  # never used before: nothing cached
        self.s.chatctl("user", "del", "frank")
        self.assert401("Bearer " + tok, "unknown")


# ---- rate limits -----------------------------------------------------------------

class RateLimits(RestCase):
    users = {"alice": "pw-alice", "bob": "pw-bob"}
    # 2 a minute per user, 5 a minute per address: one token comes back every
    # 30 s / 12 s, far slower than this test runs (even under ASan).
    rest_args = ("--login-rate-user", "2", "--login-rate-addr", "5")

    def test_per_user_then_per_address(self):
        for _ in range(2):
            st, body = self.post_login("alice", "wrong")
            self.assertError(st, body, 401, "unauthorized")
        st, hdrs, raw = raw_http(self.s, "POST", "/v1/login", {"user": "alice", "password": "pw-alice"})
        body = json.loads(raw)
        self.assertError(st, body, 429, "rate_limited")
        self.assertIn("user", body["reason"])
        self.assertGreaterEqual(int(hdrs.get("Retry-After", "0")), 1)
        # another user from the same address still gets in, until the
        # address has used its 5 attempts
        for _ in range(2):
            st, body = self.post_login("bob", "pw-bob")
            self.assertEqual(st, 200, body)
        st, body = self.post_login("bob", "pw-bob")
        self.assertError(st, body, 429, "rate_limited")
        self.assertIn("address", body["reason"])
        # tokens already issued keep working
        st, body = self.s.http("GET", "/v1/inbox", token=self.s.token("bob"))
        self.assertEqual(st, 200, body)


if __name__ == "__main__":
    main()
