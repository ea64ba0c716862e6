#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 01-auth: who may connect. Username = user id, password = the user's
# password or a token; client id = {user} or {user}:{device}; anonymous
# clients are left to allow_anonymous but can never pose as a user; users
# deleted, disabled or added while the broker runs take effect within ~2 s.

import time

from chatstack import MQTTv311, MQTTv5, SLOW, StackTestCase, main

PROTOCOLS = (MQTTv311, MQTTv5)
PNAME = {MQTTv311: "MQTT 3.1.1", MQTTv5: "MQTT 5"}
# The plugin reloads users in the background: changes must take effect
# within about 2 s (a little slack for a loaded CI machine).
RELOAD_S = 3.0 * SLOW


class AuthTest(StackTestCase):
    stack_users = {"alice": "alice-secret-1", "bob": "bob-secret-2"}

    # -- helpers
    def assertAccepted(self, rc, what):
        self.assertEqual(rc, 0, "%s: expected CONNACK 0 (accepted), got %r" % (what, rc))

    def assertRefused(self, rc, protocol, what):
        self.assertIsNotNone(rc, "%s: the broker closed the connection without a CONNACK" % what)
        if protocol == MQTTv5:
            self.assertGreaterEqual(rc, 0x80, "%s: expected a v5 refusal reason (>= 0x80), got %#x"
                                    % (what, rc))
        else:
            self.assertIn(rc, (1, 2, 3, 4, 5), "%s: expected a 3.1.1 refusal, got %r" % (what, rc))

    def connect(self, user, password, client_id, protocol=MQTTv311):
        return self.stack.connect_raw(user, password, client_id, protocol)

    def wait_rc(self, user, password, client_id, accepted, timeout=RELOAD_S):
        """Poll CONNECT until it is accepted (or refused); returns the time
        it took, fails after timeout."""
        t0 = time.monotonic()
        rc = None
        while True:
            rc = self.connect(user, password, client_id)
            if (rc == 0) == accepted:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                self.fail("%s still %s after %.1fs (last CONNACK %r)" % (
                    user, "refused" if accepted else "accepted", timeout, rc))
            time.sleep(0.05)

    # -- passwords
    def test_right_password_connects(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                self.assertAccepted(self.connect("alice", "alice-secret-1", "alice", proto),
                                    "alice, " + PNAME[proto])
                self.assertAccepted(self.connect("bob", "bob-secret-2", "bob:laptop", proto),
                                    "bob:laptop, " + PNAME[proto])
                # a real session: connected, own inbox subscribed
                c = self.stack.client("alice", "alice-secret-1", device="t1", protocol=proto)
                self.assertTrue(c.connected)
                c.disconnect()

    def test_websockets_listener(self):
        c = self.stack.client("alice", "alice-secret-1", device="ws", transport="websockets")
        self.assertTrue(c.connected)
        c.disconnect()

    def test_wrong_password_refused(self):
        for proto in PROTOCOLS:
            for pw in ("alice-secret-2", "", "ALICE-SECRET-1", "alice-secret-1 ", "bob-secret-2"):
                with self.subTest(protocol=PNAME[proto], password=pw):
                    self.assertRefused(self.connect("alice", pw, "alice", proto), proto,
                                       "alice with password %r" % pw)
            with self.subTest(protocol=PNAME[proto], password=None):
                self.assertRefused(self.connect("alice", None, "alice", proto), proto,
                                   "alice without a password")

    def test_unknown_user_refused(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                self.assertRefused(self.connect("mallory", "alice-secret-1", "mallory", proto),
                                   proto, "unknown user mallory")
                # malformed user ids never match anyone
                for user in ("alice/x", "al+ce", "alice#", "a" * 65, "alice bob"):
                    self.assertRefused(self.connect(user, "alice-secret-1", "anything-1", proto),
                                       proto, "malformed username %r" % user)

    # -- client ids
    def test_client_id_of_another_user_refused(self):
        for proto in PROTOCOLS:
            for cid in ("bob", "bob:phone", "alicex", "alic", "carol:alice"):
                with self.subTest(protocol=PNAME[proto], client_id=cid):
                    self.assertRefused(self.connect("alice", "alice-secret-1", cid, proto), proto,
                                       "alice with client id %r" % cid)

    def test_own_device_client_ids_accepted(self):
        for proto in PROTOCOLS:
            for cid in ("alice", "alice:phone", "alice:Laptop-2.home_x", "alice:" + "d" * 64):
                with self.subTest(protocol=PNAME[proto], client_id=cid):
                    self.assertAccepted(self.connect("alice", "alice-secret-1", cid, proto),
                                        "alice with client id %r" % cid)

    def test_malformed_client_id_refused(self):
        bad = ("alice:", "alice:a/b", "alice:a+b", "alice:#", "alice:a:b", "alice: x",
               "alice:" + "d" * 65, ":phone", "alice/phone")
        for proto in PROTOCOLS:
            for cid in bad:
                with self.subTest(protocol=PNAME[proto], client_id=cid):
                    self.assertRefused(self.connect("alice", "alice-secret-1", cid, proto), proto,
                                       "alice with client id %r" % cid)

    def test_session_takeover_by_other_user_impossible(self):
        # bob's session stays up when alice tries his client id
        bob = self.stack.client("bob", "bob-secret-2", device="main")
        self.assertRefused(self.connect("alice", "alice-secret-1", "bob:main"), MQTTv311,
                           "alice taking bob:main")
        self.assertRefused(self.connect(None, None, "bob:main"), MQTTv311,
                           "anonymous taking bob:main")
        time.sleep(0.3)
        self.assertTrue(bob.connected, "bob's session was kicked by a refused CONNECT")
        bob.disconnect()

    # -- tokens
    def test_token_as_password(self):
        token = self.stack.token("alice")
        self.assertTrue(token.count(".") == 2, "chatctl token printed %r" % token)
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                self.assertAccepted(self.connect("alice", token, "alice:tok", proto),
                                    "alice with her token")
                c = self.stack.client("alice", token, device="tok2", protocol=proto)
                self.assertTrue(c.connected)
                c.disconnect()

    def test_tampered_or_foreign_token_refused(self):
        token = self.stack.token("alice")
        head, body, sig = token.split(".")
        flip = lambda s, i: s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
        tampered = {
            "signature": ".".join((head, body, flip(sig, len(sig) // 2))),
            "payload": ".".join((head, flip(body, len(body) // 2), sig)),
            "truncated": token[:-3],
            "no signature": ".".join((head, body, "")),
        }
        for proto in PROTOCOLS:
            for what, bad in tampered.items():
                with self.subTest(protocol=PNAME[proto], token=what):
                    self.assertRefused(self.connect("alice", bad, "alice:tok", proto), proto,
                                       "alice with a %s-tampered token" % what)
            with self.subTest(protocol=PNAME[proto], token="bob's"):
                bobs = self.stack.token("bob")
                self.assertRefused(self.connect("alice", bobs, "alice:tok", proto), proto,
                                   "alice with bob's token")

    def test_expired_token_refused(self):
        token = self.stack.token("alice", "--ttl", "1")
        time.sleep(2.2)
        self.assertRefused(self.connect("alice", token, "alice:exp"), MQTTv311,
                           "alice with an expired token")

    # -- anonymous clients
    def test_anonymous_ordinary_client_id(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                self.assertAccepted(self.connect(None, None, "sensor-17", proto),
                                    "anonymous sensor-17")
                c = self.stack.client(None, None, client_id="sensor-18", protocol=proto)
                self.assertTrue(c.connected)
                c.disconnect()

    def test_anonymous_user_client_id_refused(self):
        for proto in PROTOCOLS:
            for cid in ("alice", "alice:x", "bob", "bob:phone"):
                with self.subTest(protocol=PNAME[proto], client_id=cid):
                    self.assertRefused(self.connect(None, None, cid, proto), proto,
                                       "anonymous client with client id %r" % cid)

    # -- changes while the broker runs
    def test_user_added_while_running(self):
        self.assertRefused(self.connect("dave", "dave-pw-1", "dave"), MQTTv311, "dave before add")
        self.stack.add_user("dave", "dave-pw-1", wait=False)
        took = self.wait_rc("dave", "dave-pw-1", "dave", accepted=True)
        self.assertLessEqual(took, RELOAD_S)
        self.assertRefused(self.connect("dave", "wrong", "dave"), MQTTv311, "dave, wrong password")

    def test_deleted_user_refused(self):
        self.stack.add_user("erin", "erin-pw-1")
        self.assertAccepted(self.connect("erin", "erin-pw-1", "erin"), "erin before delete")
        token = self.stack.token("erin")
        self.stack.chatctl("user", "del", "erin")
        self.wait_rc("erin", "erin-pw-1", "erin", accepted=False)
        # a token issued before the deletion is no way back in
        self.assertRefused(self.connect("erin", token, "erin:tok"), MQTTv311,
                           "deleted erin with an old token")
        self.assertNotEqual(self.stack.chatctl("user", "del", "erin", check=False).returncode, 0,
                            "deleting erin twice should fail")

    def test_disabled_user_refused(self):
        self.stack.add_user("frank", "frank-pw-1")
        token = self.stack.token("frank")
        self.assertAccepted(self.connect("frank", "frank-pw-1", "frank"), "frank before disable")
        self.stack.sql("UPDATE users SET disabled = true WHERE id = %s", ("frank",))
        self.wait_rc("frank", "frank-pw-1", "frank", accepted=False)
        self.assertRefused(self.connect("frank", token, "frank:tok"), MQTTv311,
                           "disabled frank with a token")
        self.stack.sql("UPDATE users SET disabled = false WHERE id = %s", ("frank",))
        self.wait_rc("frank", "frank-pw-1", "frank", accepted=True)

    def test_password_change(self):
        self.stack.add_user("gina", "gina-old-pw")
        self.stack.chatctl("user", "passwd", "gina", input="gina-new-pw\n")
        self.wait_rc("gina", "gina-old-pw", "gina", accepted=False)
        self.wait_rc("gina", "gina-new-pw", "gina", accepted=True)


if __name__ == "__main__":
    main()
