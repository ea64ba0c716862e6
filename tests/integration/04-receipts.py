#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""04-receipts: delivered/read receipts on chat/receipt/{sender}.

Covered: bob's {"status":"delivered","ids":[id]} to chat/receipt/alice
becomes {"type":"receipt","seq":N,"ts":...,"from":"bob","status":
"delivered","ids":[id]} in alice's inbox (stored, with alice's next seq);
read after delivered; the receipts table keeps 'read' when a 'delivered'
comes later; read_marks keep bob's highest seq per conversation (DM and
group); receipts for messages bob never received from alice (alice's
message to someone else, a made-up id, a message from someone else, bob's
own message) are refused with an error event to bob's sending device only
and nothing reaches alice; malformed payloads are bad_payload; a receipt
to an unknown user is unknown_recipient.
"""

import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatstack import MQTTv5, SLOW, StackTestCase, main  # noqa: E402

FAST = ["--iterations", "1000"]
RECEIPT_KEYS = {"type", "seq", "ts", "from", "status", "ids"}
ERROR_CODES = {"bad_payload", "too_large", "unknown_recipient", "not_member", "blocked",
               "rate_limited", "unavailable"}


def is_type(t):
    return lambda m: isinstance(m.json, dict) and m.json.get("type") == t


class ReceiptTest(StackTestCase):
    stack_options = {"presence_debounce_ms": 300}
    stack_users = {"admin0": "admin0-pw"}
    maxDiff = None

    def setUp(self):
        super().setUp()
        self._mine = []

    def tearDown(self):
        for c in self._mine:
            try:
                c.disconnect()
            except Exception:
                pass
        super().tearDown()

    def users(self, *names):
        tag = secrets.token_hex(2)
        out = []
        for n in names:
            u = "%s-%s" % (n, tag)
            self.stack.chatctl(*FAST, "user", "add", u, input="pw-%s\n" % u)
            out.append(u)
        self.stack.wait_user(out[-1], "pw-" + out[-1])
        return out

    def client(self, user, device=None, **kw):
        c = self.stack.client(user, "pw-" + user, device=device, **kw)
        self._mine.append(c)
        return c

    def dm(self, frm_client, to, body):
        """Send a DM; returns (id, the sender's seq)."""
        cid = "c-" + secrets.token_hex(4)
        frm_client.publish("chat/dm/" + to, {"cid": cid, "body": body})
        ev = frm_client.wait_event("msg", cid=cid)
        return ev["id"], ev["seq"]

    def receipt(self, c, to, status, ids):
        c.publish("chat/receipt/" + to, {"status": status, "ids": ids})

    def receipt_row(self, reader, msg_id):
        r = self.stack.sql("SELECT status FROM receipts WHERE user_id = %s AND msg_id = %s",
                           (reader, int(msg_id)))
        return r[0][0] if r else None

    def mark(self, reader, kind, conv):
        r = self.stack.sql("SELECT read_seq FROM read_marks WHERE user_id = %s AND kind = %s AND "
                           "conv = %s", (reader, kind, conv))
        return r[0][0] if r else None

    def last_seq(self, user):
        return self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s", (user,))[0][0]

    def wait_row(self, reader, msg_id, status, timeout=3):
        deadline = time.monotonic() + timeout * SLOW
        while self.receipt_row(reader, msg_id) != status and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.receipt_row(reader, msg_id), status)

    # ----------------------------------------------------------------------
    def test_delivered_then_read(self):
        alice, bob = self.users("alice", "bob")
        a = self.client(alice)
        a2 = self.client(alice, device="tablet", protocol=MQTTv5)
        b = self.client(bob)
        mid, _ = self.dm(a, bob, "hello bob")
        bev = b.wait_event("msg", id=mid)
        a2.wait_event("msg", id=mid)
        seq0 = self.last_seq(alice)

        self.receipt(b, alice, "delivered", [mid])
        ev = a.wait_event("receipt")
        self.assertEqual(set(ev), RECEIPT_KEYS, "receipt event keys: %r" % ev)
        self.assertEqual((ev["from"], ev["status"], ev["ids"]), (bob, "delivered", [mid]))
        self.assertEqual(ev["seq"], seq0 + 1, "a receipt is stored with alice's next seq")
        self.assertIsInstance(ev["ts"], int)
        self.assertLess(abs(ev["ts"] - time.time() * 1000), 60000)
        self.assertEqual(a2.wait_event("receipt"), ev, "every device of alice gets it")
        b.expect_none(0.3, pred=is_type("receipt"), what="a receipt echoed to its reader")
        b.expect_none(0.1, pred=is_type("error"))
        row = self.stack.sql("SELECT kind, from_user, status, ids, ts FROM messages WHERE "
                             "user_id = %s AND seq = %s", (alice, ev["seq"]))
        self.assertEqual(row, [("receipt", bob, "delivered", [mid], ev["ts"])])
        self.wait_row(bob, mid, "delivered")
        self.assertIsNone(self.mark(bob, "dm", alice), "delivered does not move the read mark")

        self.receipt(b, alice, "read", [mid])
        ev2 = a.wait_event("receipt")
        self.assertEqual((ev2["from"], ev2["status"], ev2["ids"], ev2["seq"]),
                         (bob, "read", [mid], seq0 + 2))
        self.wait_row(bob, mid, "read")
        self.assertEqual(self.mark(bob, "dm", alice), bev["seq"], "read mark: bob's seq of it")

        # a later 'delivered' never downgrades 'read'
        self.receipt(b, alice, "delivered", [mid])
        a.wait_event("receipt", status="delivered")
        time.sleep(0.2)
        self.assertEqual(self.receipt_row(bob, mid), "read")
        self.assertEqual(self.mark(bob, "dm", alice), bev["seq"])

    def test_several_ids_and_read_marks(self):
        alice, bob, carol = self.users("alice", "bob", "carol")
        a = self.client(alice)
        b = self.client(bob)
        c = self.client(carol)
        m1, _ = self.dm(a, bob, "one")
        m2, _ = self.dm(a, bob, "two")
        m3, _ = self.dm(a, bob, "three")
        s = {e["id"]: e["seq"] for e in [b.wait_event("msg", id=i) for i in (m1, m2, m3)]}
        # read two at once, out of order
        self.receipt(b, alice, "read", [m3, m1])
        ev = a.wait_event("receipt")
        self.assertEqual(ev["status"], "read")
        self.assertEqual(sorted(ev["ids"]), sorted([m1, m3]))
        for i in (m1, m3):
            self.wait_row(bob, i, "read")
        self.assertIsNone(self.receipt_row(bob, m2))
        self.assertEqual(self.mark(bob, "dm", alice), s[m3])
        # reading an older one does not move the mark back
        self.receipt(b, alice, "read", [m2])
        a.wait_event("receipt", ids=[m2])
        self.wait_row(bob, m2, "read")
        self.assertEqual(self.mark(bob, "dm", alice), s[m3])

        # group messages: the read mark is per group
        gid = "rg-" + secrets.token_hex(3)
        self.stack.chatctl("group", "create", gid, "--owner", alice)
        self.stack.chatctl("group", "add", gid, bob)
        self.stack.chatctl("group", "add", gid, carol)
        c.wait_event("group", group=gid, event="added", user=carol)
        # (04-groups checks when membership takes effect; here: wait until
        # carol's own send is accepted, so she surely is a member)
        deadline = time.monotonic() + 3 * SLOW
        while True:
            cid = "g-" + secrets.token_hex(3)
            c.publish("chat/group/" + gid, {"cid": cid, "body": "carol's probe"})
            probe = c.wait_for(lambda m: m.json and m.json.get("cid") == cid).json
            if probe["type"] == "msg" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(probe["type"], "msg")
        cid = "g-" + secrets.token_hex(3)
        a.publish("chat/group/" + gid, {"cid": cid, "body": "to the group"})
        ack = a.wait_event("msg", cid=cid)
        gid_id = ack["id"]
        bg = b.wait_event("msg", id=gid_id)
        c.wait_event("msg", id=gid_id)
        self.receipt(b, alice, "delivered", [gid_id])
        self.assertEqual(a.wait_event("receipt")["ids"], [gid_id])
        self.receipt(b, alice, "read", [gid_id])
        a.wait_event("receipt", status="read", ids=[gid_id])
        self.wait_row(bob, gid_id, "read")
        self.assertEqual(self.mark(bob, "group", gid), bg["seq"])
        self.assertEqual(self.mark(bob, "dm", alice), s[m3], "the DM mark is separate")
        # carol received the group message from alice too, but only for alice
        self.receipt(c, bob, "read", [gid_id])
        err = c.wait_event("error")
        self.assertIn(err["code"], ERROR_CODES)
        b.expect_none(0.3, pred=is_type("receipt"))

    def test_receipts_for_messages_not_received_are_refused(self):
        alice, bob, carol = self.users("alice", "bob", "carol")
        a = self.client(alice)
        b = self.client(bob)
        b2 = self.client(bob, device="other")
        c = self.client(carol)
        to_carol, _ = self.dm(a, carol, "for carol only")      # bob never received it
        from_carol, _ = self.dm(c, bob, "carol to bob")        # bob received it, but from carol
        b.wait_event("msg", id=from_carol)
        b2.wait_event("msg", id=from_carol)
        bobs_own, _ = self.dm(b, alice, "bob's own message")   # bob sent it
        a.wait_event("msg", id=bobs_own)
        b2.wait_event("msg", id=bobs_own)
        a.drain()
        b2.drain()
        seq0 = self.last_seq(alice)
        cases = [
            ("alice's message to carol", [to_carol]),
            ("a made-up id", ["123456789012345"]),
            ("a message from carol", [from_carol]),
            ("bob's own message", [bobs_own]),
        ]
        for what, ids in cases:
            for status in ("delivered", "read"):
                with self.subTest(what=what, status=status):
                    self.receipt(b, alice, status, ids)
                    err = b.wait_event("error")
                    self.assertIn(err["code"], ERROR_CODES, "error event: %r" % err)
                    self.assertTrue(err.get("reason"))
                    sys.stderr.write("\n  receipt for %s (%s): %s\n" % (what, status, err["code"]))
        a.expect_none(0.5, pred=is_type("receipt"), what="a receipt alice must not get")
        b2.expect_none(0.1, what="an error on bob's other device")
        self.assertEqual(self.last_seq(alice), seq0, "nothing stored for alice")
        for i in (to_carol, from_carol, bobs_own):
            self.assertIsNone(self.receipt_row(bob, i))
        self.assertIsNone(self.mark(bob, "dm", alice))
        self.assertIsNone(self.mark(bob, "dm", carol))
        # the same receipt to the right sender is fine
        self.receipt(b, carol, "read", [from_carol])
        self.assertEqual(c.wait_event("receipt")["ids"], [from_carol])

    def test_malformed_receipts(self):
        alice, bob = self.users("alice", "bob")
        a = self.client(alice)
        b = self.client(bob)
        b2 = self.client(bob, device="other")
        mid, _ = self.dm(a, bob, "hi")
        b.wait_event("msg", id=mid)
        b2.wait_event("msg", id=mid)
        a.drain()
        seq0 = self.last_seq(alice)
        bad = [
            b"",
            b"not json",
            b"{}",
            b"[1, 2]",
            b'{"status": "seen", "ids": ["%s"]}' % mid.encode(),
            b'{"status": "READ", "ids": ["%s"]}' % mid.encode(),
            b'{"ids": ["%s"]}' % mid.encode(),
            b'{"status": "read"}',
            b'{"status": "read", "ids": []}',
            b'{"status": "read", "ids": "%s"}' % mid.encode(),
            b'{"status": "read", "ids": [%s]}' % mid.encode(),
            b'{"status": "read", "ids": [null]}',
            b'{"status": "read", "ids": ["abc"]}',
            b'{"status": "read", "ids": ["-5"]}',
            b'{"status": "read", "ids": ["+%s"]}' % mid.encode(),
            b'{"status": "read", "ids": [" %s"]}' % mid.encode(),
            b'{"status": "read", "ids": ["%s "]}' % mid.encode(),
            b'{"status": "read", "ids": ["0"]}',
            b'{"status": "read", "ids": ["99999999999999999999999"]}',
            b'{"status": "read", "ids": ["%s"], "status": "delivered"}' % mid.encode(),
            b'{"status": "read", "ids": ["' + mid.encode() + b'"]\xff}',
            b"\xc3\x28",
            ('{"status": "read", "ids": [%s]}' % ", ".join('"%d"' % (i + 1) for i in range(300))).encode(),
        ]
        for p in bad:
            with self.subTest(payload=p[:60]):
                b.publish("chat/receipt/" + alice, p)
                err = b.wait_event("error")
                self.assertEqual(err["code"], "bad_payload", "payload %r: %r" % (p[:60], err))
                self.assertNotIn("cid", err)
        a.expect_none(0.5, pred=is_type("receipt"))
        b2.expect_none(0.1, what="an error on bob's other device")
        self.assertEqual(self.last_seq(alice), seq0)
        self.assertIsNone(self.receipt_row(bob, mid))
        # to a malformed or unknown user
        for to in ("nosuch-" + secrets.token_hex(3), "bad user", "x" * 65):
            with self.subTest(to=to):
                self.receipt(b, to, "read", [mid])
                self.assertEqual(b.wait_event("error")["code"], "unknown_recipient")
        # and the good one still works afterwards
        self.receipt(b, alice, "read", [mid])
        self.assertEqual(a.wait_event("receipt")["ids"], [mid])


if __name__ == "__main__":
    main()
