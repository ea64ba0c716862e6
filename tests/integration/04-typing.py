#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""04-typing: ephemeral typing notices.

Covered: alice's publish (empty payload or {}) on chat/typing/bob reaches
bob's inbox as exactly {"type":"typing","from":"alice","to":"bob"} at QoS 0,
with no seq, and nothing is stored (no messages row, no seq used up); on
chat/typing/group/{gid} every member except the sender gets it with
"group"; a non-member's group notice reaches nobody; a burst of 50 notices
from one sender is rate-limited (fewer than 50 delivered, at least 1), per
sender, and the bucket refills.
"""

import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatstack import MQTTv5, SLOW, StackTestCase, main  # noqa: E402

FAST = ["--iterations", "1000"]


def typing_msgs(c):
    return [m for m in c.received if isinstance(m.json, dict) and m.json.get("type") == "typing"]


def is_typing(m):
    return isinstance(m.json, dict) and m.json.get("type") == "typing"


class TypingTest(StackTestCase):
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

    def totals(self):
        n = self.stack.sql("SELECT count(*) FROM messages")[0][0]
        s = self.stack.sql("SELECT COALESCE(sum(last_seq), 0) FROM inbox_counters")[0][0]
        return n, s

    def test_dm_typing(self):
        alice, bob = self.users("alice", "bob")
        a = self.client(alice)
        b = self.client(bob)
        b2 = self.client(bob, device="tablet", protocol=MQTTv5)
        # one stored message first, so bob's seq is known
        a.publish("chat/dm/" + bob, {"cid": "t0", "body": "hi"})
        first = b.wait_event("msg", body="hi")
        b2.wait_event("msg", body="hi")
        before = self.totals()
        for payload, qos in ((b"", 0), (b"{}", 1), (b"", 1)):
            with self.subTest(payload=payload, qos=qos):
                a.publish("chat/typing/" + bob, payload, qos=qos)
                for c in (b, b2):
                    m = c.wait_for(is_typing, what="typing notice")
                    self.assertEqual(m.topic, "chat/inbox/" + bob)
                    self.assertEqual(m.json, {"type": "typing", "from": alice, "to": bob},
                                     "exactly the typing event, no seq")
                    self.assertEqual(m.qos, 0, "typing notices are QoS 0")
                    self.assertFalse(m.retain)
                time.sleep(0.3)  # stay under the rate limit
        a.expect_none(0.3, pred=is_typing, what="the sender's own typing notice")
        a.expect_none(0.1, pred=lambda m: m.json and m.json.get("type") == "error")
        time.sleep(0.3)
        self.assertEqual(self.totals(), before, "typing notices are never stored")
        # the next stored event takes the very next seq: typing used none
        a.publish("chat/dm/" + bob, {"cid": "t1", "body": "again"})
        self.assertEqual(b.wait_event("msg", body="again")["seq"], first["seq"] + 1)
        # nobody else gets it
        carol, = self.users("carol")
        c = self.client(carol)
        self.assertGreaterEqual(c.subscribe("chat/typing/" + bob)[0], 0x80,
                                "nobody may subscribe to typing topics")
        time.sleep(0.3)
        a.publish("chat/typing/" + bob, b"")
        b.wait_for(is_typing)
        c.expect_none(0.5, pred=is_typing, what="someone else's typing notice")

    def test_group_typing(self):
        alice, bob, carol, dave = self.users("alice", "bob", "carol", "dave")
        cl = {u: self.client(u) for u in (alice, bob, carol, dave)}
        gid = "ty-" + secrets.token_hex(3)
        self.stack.chatctl("group", "create", gid, "--owner", alice)
        self.stack.chatctl("group", "add", gid, bob)
        self.stack.chatctl("group", "add", gid, carol)
        # wait until the broker knows carol is a member (her send is accepted)
        deadline = time.monotonic() + 3 * SLOW
        while True:
            cid = "p-" + secrets.token_hex(3)
            cl[carol].publish("chat/group/" + gid, {"cid": cid, "body": "probe"})
            ev = cl[carol].wait_for(lambda m: m.json and m.json.get("cid") == cid).json
            if ev["type"] == "msg" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(ev["type"], "msg")
        before = self.totals()
        for c in cl.values():
            c.drain()
        cl[alice].publish("chat/typing/group/" + gid, b"{}")
        for u in (bob, carol):
            m = cl[u].wait_for(is_typing, what="group typing notice for %s" % u)
            self.assertEqual(m.topic, "chat/inbox/" + u)
            self.assertEqual(m.json, {"type": "typing", "from": alice, "group": gid})
            self.assertEqual(m.qos, 0)
        cl[alice].expect_none(0.5, pred=is_typing, what="the sender's own group typing notice")
        cl[dave].expect_none(0.1, pred=is_typing, what="a non-member's typing notice")
        # a non-member's notice reaches nobody, nor does one to an unknown group
        cl[dave].publish("chat/typing/group/" + gid, b"")
        cl[bob].publish("chat/typing/group/nosuch-" + secrets.token_hex(3), b"")
        for u in (alice, bob, carol):
            cl[u].expect_none(0.5, pred=is_typing, what="a typing notice from a non-member")
        time.sleep(0.3)
        self.assertEqual(self.totals(), before, "typing notices are never stored")

    def test_burst_is_rate_limited(self):
        alice, bob, carol = self.users("alice", "bob", "carol")
        a = self.client(alice)
        b = self.client(bob)
        c = self.client(carol)
        for i in range(50):
            a.publish("chat/typing/" + bob, b"", qos=1)
        time.sleep(1.0)
        n = len(typing_msgs(b))
        sys.stderr.write("\n  [rate] burst of 50 typing notices: %d delivered\n" % n)
        self.assertGreaterEqual(n, 1, "the first notice of a burst gets through")
        self.assertLess(n, 50, "a burst of 50 notices must be rate-limited")
        # the limit is per sender: carol is not held back by alice's burst
        c.publish("chat/typing/" + bob, b"")
        self.assertEqual(b.wait_for(lambda m: is_typing(m) and m.json["from"] == carol).json["from"],
                         carol)
        # and the bucket refills
        time.sleep(1.5)
        b.drain()
        a.publish("chat/typing/" + bob, b"")
        b.wait_for(lambda m: is_typing(m) and m.json["from"] == alice, what="typing after a pause")
        # a burst mixed over DM and group topics shares one bucket
        gid = "tb-" + secrets.token_hex(3)
        self.stack.chatctl("group", "create", gid, "--owner", alice)
        self.stack.chatctl("group", "add", gid, bob)
        deadline = time.monotonic() + 3 * SLOW
        while True:
            cid = "p-" + secrets.token_hex(3)
            b.publish("chat/group/" + gid, {"cid": cid, "body": "probe"})
            ev = b.wait_for(lambda m: m.json and m.json.get("cid") == cid).json
            if ev["type"] == "msg" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(1.5)
        b.drain()
        for i in range(25):
            a.publish("chat/typing/" + bob, b"", qos=1)
            a.publish("chat/typing/group/" + gid, b"", qos=1)
        time.sleep(1.0)
        n = len([m for m in b.drain() if is_typing(m)])
        sys.stderr.write("  [rate] mixed burst of 50 (DM + group): %d delivered\n" % n)
        self.assertGreaterEqual(n, 1)
        self.assertLess(n, 50)


if __name__ == "__main__":
    main()
