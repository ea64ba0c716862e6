#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 03-dm-errors: sends that are refused. Each produces one error event
# {"type":"error","code":…,"reason":…} (cid echoed when it could be read)
# on chat/inbox/{sender}, to the sending device only: the sender's other
# devices and the recipient get nothing, nothing is stored, no seq is used,
# and the connection stays open (the next send works). Codes: bad_payload
# (not UTF-8, JSON that is not an object with a string body), too_large
# (over plugin_opt_max_payload, 1024 here), unknown_recipient (unknown,
# deleted or malformed user id).

import json
import secrets
import time

from chatstack import MQTTv311, MQTTv5, SLOW, StackTestCase, main

MAX_PAYLOAD = 1024
ERROR_KEYS = {"type", "code", "reason", "cid"}


class DMErrorsTest(StackTestCase):
    stack_options = {"max_payload": MAX_PAYLOAD, "presence_debounce_ms": 600000}

    def setUp(self):
        tag = secrets.token_hex(3)
        self.A, self.B = "alice-%s" % tag, "bob-%s" % tag
        self.stack.add_user(self.A, "pw-a")
        self.stack.add_user(self.B, "pw-b")
        self.laptop = self.stack.client(self.A, "pw-a", device="laptop")
        self.tablet = self.stack.client(self.A, "pw-a", device="tablet", subscribe_inbox=False)
        # a wildcard subscription must not see another device's errors either
        self.assertEqual(self.tablet.subscribe("chat/inbox/#"), [1])
        self.bob = self.stack.client(self.B, "pw-b")

    def tearDown(self):
        for c in (self.laptop, self.tablet, self.bob):
            c.disconnect()

    def expect_error(self, dev, topic, payload, code, cid=None, cid_optional=False):
        """Publish payload and return the error event dev receives."""
        t0 = time.monotonic()
        dev.publish(topic, payload)
        m = dev.wait_for(lambda m: m.topic == "chat/inbox/%s" % self.A, 5,
                         what="error %s for %s on %s" % (code, repr(payload)[:60], topic))
        ev = m.json
        what = "%s %s" % (topic, repr(payload)[:80])
        self.assertIsInstance(ev, dict, "%s: %r" % (what, m))
        self.assertEqual(ev.get("type"), "error", "%s: expected an error event, got %r" % (what, ev))
        self.assertEqual(ev.get("code"), code, "%s: %r" % (what, ev))
        self.assertIsInstance(ev.get("reason"), str, ev)
        self.assertTrue(ev["reason"], ev)
        self.assertTrue(set(ev) <= ERROR_KEYS, "%s: keys outside the contract in %r" % (what, ev))
        self.assertNotIn("seq", ev)
        if cid_optional:
            self.assertIn(ev.get("cid", cid), (cid,), "%s: %r" % (what, ev))
        elif cid is None:
            self.assertNotIn("cid", ev, "%s: no readable cid, none echoed: %r" % (what, ev))
        else:
            self.assertEqual(ev.get("cid"), cid, "%s: the cid must be echoed: %r" % (what, ev))
        self.assertFalse(m.retain)
        # errors come straight from the broker thread, not the writer
        self.assertLess(time.monotonic() - t0, 5 * SLOW, "error took too long")
        return ev

    def nobody_else(self, what):
        self.laptop.expect_none(0.5, what="%s on the sender's other device" % what)
        self.tablet.expect_none(0.05, what="%s on a wildcard subscription of the sender" % what)
        self.bob.expect_none(0.05, what="%s at the recipient" % what)

    def last_seq(self, user):
        return self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s", (user,))[0][0]

    def still_works(self, dev, seq=1):
        """The connection is open and nothing was stored for the errors: the
        next message gets the next seq of each side (seq for the sender)."""
        self.assertTrue(dev.connected, "the sending device was disconnected")
        self.assertEqual(self.last_seq(self.A), seq - 1, "errors must not use seq numbers")
        bseq = self.last_seq(self.B) + 1
        nrows = self.stack.sql("SELECT count(*) FROM messages WHERE user_id IN (%s, %s)",
                               (self.A, self.B))[0][0]
        self.assertEqual(nrows, seq - 1 + bseq - 1, "rows were stored for errors")
        dev.publish("chat/dm/%s" % self.B, {"cid": "ok-%d" % seq, "body": "still here"})
        ev = dev.wait_event("msg", cid="ok-%d" % seq)
        self.assertEqual(ev["seq"], seq)
        self.assertEqual(self.bob.wait_event("msg", body="still here")["seq"], bseq)
        self.assertEqual(self.laptop.wait_event("msg", cid="ok-%d" % seq), ev)
        self.tablet.drain()

    def test_bad_payload(self):
        phone = self.stack.client(self.A, "pw-a", device="phone")
        t = "chat/dm/%s" % self.B
        cases = [
            # (payload, cid echoed, cid optional)
            (b"\xff\xfe not utf-8", None, False),
            (b"caf\xe9", None, False),  # latin-1
            (b"\xc3\x28", None, False),  # broken 2-byte sequence
            (b"\xed\xa0\x80", None, False),  # UTF-8-encoded surrogate
            (b"\xc0\xaf", None, False),  # overlong
            (b"nul\x00byte", None, False),
            # invalid UTF-8 inside a JSON object: the cid may or may not be read
            (b'{"cid":"u-1","body":"\xff"}', "u-1", True),
            (json.dumps({"cid": "nb-1"}), "nb-1", False),  # no body
            (json.dumps({"cid": "nb-2", "text": "hi"}), "nb-2", False),
            (json.dumps({"cid": "nb-3", "body": 5}), "nb-3", False),  # body not a string
            (json.dumps({"cid": "nb-4", "body": None}), "nb-4", False),
            (json.dumps({"cid": "nb-5", "body": ["x"]}), "nb-5", False),
            (json.dumps({"cid": "nb-6", "body": {"t": "x"}}), "nb-6", False),
            ("42", None, False),  # a JSON number
            ("-1.5e3", None, False),
            ('"just a string"', None, False),
            ("[1, 2, 3]", None, False),
            ('[{"body":"x"}]', None, False),
            ("true", None, False),
            ("null", None, False),
            ("{}", None, False),
        ]
        for payload, cid, opt in cases:
            with self.subTest(payload=payload):
                self.expect_error(phone, t, payload, "bad_payload", cid, opt)
        self.nobody_else("bad_payload")
        self.still_works(phone)

    def test_json_edge_cases_not_taken_as_text(self):
        """A payload that is valid JSON (RFC 8259) is never stored as a plain
        text body: an object with a string body is a message with that body,
        anything the server cannot store is bad_payload."""
        phone = self.stack.client(self.A, "pw-a", device="phone")
        t = "chat/dm/%s" % self.B
        cases = [
            # an escaped U+0000 in the body (PostgreSQL text cannot hold it)
            ('{"cid":"j-1","body":"a\\u0000b"}', "j-1", ["a\x00b"]),
            # duplicate member names: either value, or bad_payload
            ('{"cid":"j-2","body":"a","body":"b"}', "j-2", ["a", "b"]),
        ]
        for payload, cid, ok_bodies in cases:
            with self.subTest(payload=payload):
                phone.publish(t, payload)
                m = phone.wait_for(lambda m: m.topic == "chat/inbox/%s" % self.A, 5)
                ev = m.json
                if ev.get("type") == "error":
                    self.assertEqual(ev.get("code"), "bad_payload", ev)
                    self.assertEqual(ev.get("cid"), cid, ev)
                    continue
                self.assertEqual(ev.get("type"), "msg", ev)
                self.assertNotEqual(ev.get("body"), payload,
                                    "valid JSON was stored as a plain-text body: %r" % ev)
                self.assertIn(ev.get("body"), ok_bodies, ev)
                self.assertEqual(ev.get("cid"), cid, ev)
        self.bob.drain()
        self.laptop.drain()
        self.tablet.drain()

    def test_too_large(self):
        phone = self.stack.client(self.A, "pw-a", device="phone")
        t = "chat/dm/%s" % self.B

        def sized(cid, n):
            """A JSON send of exactly n bytes."""
            base = json.dumps({"cid": cid, "body": ""})
            return json.dumps({"cid": cid, "body": "x" * (n - len(base))})

        big = sized("big-1", MAX_PAYLOAD + 1)
        self.assertEqual(len(big), MAX_PAYLOAD + 1)
        self.expect_error(phone, t, big, "too_large", "big-1")
        self.expect_error(phone, t, sized("big-2", 20000), "too_large", "big-2")
        self.expect_error(phone, t, "y" * (MAX_PAYLOAD + 1), "too_large", None)
        # too large and not even UTF-8: too_large or bad_payload, never stored
        phone.publish(t, b"\xff" * (MAX_PAYLOAD + 10))
        ev = phone.wait_event("error")
        self.assertIn(ev["code"], ("too_large", "bad_payload"), ev)
        self.expect_error(phone, t, b"z" * (300 * 1024), "too_large", None)
        self.nobody_else("too_large")
        # exactly the limit is accepted
        exact = sized("edge-1", MAX_PAYLOAD)
        self.assertEqual(len(exact), MAX_PAYLOAD)
        phone.publish(t, exact)
        self.assertEqual(phone.wait_event("msg", cid="edge-1")["seq"], 1)
        self.assertEqual(self.bob.wait_event("msg")["body"], json.loads(exact)["body"])
        self.laptop.wait_event("msg", cid="edge-1")
        self.tablet.drain()
        self.still_works(phone, seq=2)

    def test_unknown_recipient(self):
        phone = self.stack.client(self.A, "pw-a", device="phone")
        body = {"cid": "ur-1", "body": "hello?"}
        topics = [
            "chat/dm/nobody-%s" % secrets.token_hex(3),  # well-formed, unknown
            "chat/dm/a b",  # a space
            "chat/dm/%s/extra" % self.B,  # more levels
            "chat/dm/",  # empty id
            "chat/dm/" + "a" * 65,  # too long
            "chat/dm/bö",  # outside [A-Za-z0-9._-]
            "chat/dm/%s " % self.B,  # trailing space
            "chat/dm/%s" % self.B.upper(),  # ids are case-sensitive
            "chat/dm/$SYS",
            "chat/dm/..",
        ]
        for t in topics:
            with self.subTest(topic=t):
                self.expect_error(phone, t, body, "unknown_recipient", "ur-1")
        # plain text: nothing to echo
        self.expect_error(phone, topics[0], "hi there", "unknown_recipient", None)
        self.nobody_else("unknown_recipient")

        # a deleted user becomes unknown (the plugin reloads users in ~2 s)
        carol = "carol-%s" % secrets.token_hex(3)
        self.stack.add_user(carol, "pw-c")
        phone.publish("chat/dm/%s" % carol, {"cid": "to-carol", "body": "hi carol"})
        self.assertEqual(phone.wait_event("msg", cid="to-carol")["to"], carol)
        self.laptop.wait_event("msg", cid="to-carol")
        self.tablet.drain()
        self.stack.chatctl("user", "del", carol)
        deadline = time.monotonic() + 5 * SLOW
        while True:
            phone.publish("chat/dm/%s" % carol, {"cid": "to-gone", "body": "still there?"})
            ev = phone.wait_event(None, topic="chat/inbox/%s" % self.A)
            if ev.get("type") == "error" and ev.get("code") != "unavailable":
                self.assertEqual((ev["code"], ev.get("cid")), ("unknown_recipient", "to-gone"))
                break
            # until the deletion reaches the plugin: stored, or (the writer
            # already lost the user's counter) "unavailable"
            self.assertIn((ev.get("type"), ev.get("cid")), (("msg", "to-gone"), ("error", "to-gone")),
                          ev)
            self.assertLess(time.monotonic(), deadline, "a deleted user is still a recipient")
            self.laptop.drain()
            self.tablet.drain()
            time.sleep(0.2)
        self.laptop.drain()
        self.tablet.drain()
        self.bob.expect_none(0.3)
        self.still_works(phone, seq=self.last_seq(self.A) + 1)

    def test_errors_on_mqtt5_and_devices(self):
        """The same for an MQTT 5 sender; errors of one device never reach
        the user's other devices, whichever device errs."""
        for proto in (MQTTv311, MQTTv5):
            with self.subTest(protocol=proto):
                phone = self.stack.client(self.A, "pw-a", device="phone5", protocol=proto)
                self.expect_error(phone, "chat/dm/nobody-x", {"cid": "v-1", "body": "x"},
                                  "unknown_recipient", "v-1")
                self.expect_error(phone, "chat/dm/%s" % self.B, "[]", "bad_payload", None)
                self.expect_error(phone, "chat/dm/%s" % self.B, "q" * 5000, "too_large", None)
                # the laptop errs: the phone sees nothing
                self.laptop.publish("chat/dm/nobody-y", {"cid": "v-2", "body": "x"})
                ev = self.laptop.wait_event("error", cid="v-2")
                self.assertEqual(ev["code"], "unknown_recipient")
                phone.expect_none(0.5, what="another device's error")
                self.nobody_else("an error")
                self.assertTrue(phone.connected and self.laptop.connected)
                phone.disconnect()
        phone = self.stack.client(self.A, "pw-a", device="phone")
        self.still_works(phone)


if __name__ == "__main__":
    main()
