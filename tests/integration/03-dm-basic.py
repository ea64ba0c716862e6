#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 03-dm-basic: one direct message, end to end. alice publishes to
# chat/dm/bob; bob's devices get a msg event on chat/inbox/bob and every
# device of alice gets the sender's copy (with her cid) on chat/inbox/alice,
# which is her acknowledgement: both only once the rows are committed.
# Covers the event's fields, each user's own seq counter, plain-text
# payloads (also from mosquitto_pub), meta round trips, and that the retain
# flag of a send is ignored.

import json
import os
import secrets
import shutil
import subprocess
import time

from chatstack import MQTTv311, MQTTv5, SLOW, StackTestCase, main

# The keys a DM event may carry (protocol.md, "Inbox events").
MSG_KEYS = {"type", "id", "seq", "ts", "from", "to", "body"}
MSG_OPTIONAL = {"cid", "meta"}


def now_ms():
    return int(time.time() * 1000)


class DMBase(StackTestCase):
    # a small debounce keeps presence out of the way; nothing here needs it
    stack_options = {"presence_debounce_ms": 600000}

    def users(self, *names):
        """Fresh users for one test (so every seq starts at 1): returns
        {short name: (user id, password)}."""
        tag = secrets.token_hex(3)
        out = {}
        for n in names:
            uid, pw = "%s-%s" % (n, tag), "pw-%s-%s" % (n, secrets.token_hex(4))
            self.stack.add_user(uid, pw)
            out[n] = (uid, pw)
        return out

    def dev(self, u, device=None, **kw):
        return self.stack.client(u[0], u[1], device=device, **kw)

    def assertMsg(self, ev, frm, to, body, sender_copy, cid=None, meta=None, seq=None,
                  t0=None, t1=None):
        """ev is a complete DM event of the contract."""
        self.assertIsInstance(ev, dict, ev)
        keys = set(ev)
        self.assertTrue(MSG_KEYS <= keys, "missing %s in %r" % (MSG_KEYS - keys, ev))
        self.assertTrue(keys <= MSG_KEYS | MSG_OPTIONAL, "keys outside the contract: %s in %r"
                        % (keys - MSG_KEYS - MSG_OPTIONAL, ev))
        self.assertEqual(ev["type"], "msg")
        self.assertIsInstance(ev["id"], str, "id must be a JSON string: %r" % ev)
        self.assertTrue(ev["id"], ev)
        self.assertIs(type(ev["seq"]), int, ev)
        self.assertGreaterEqual(ev["seq"], 1, ev)
        self.assertIs(type(ev["ts"]), int, ev)
        if t0 is not None:
            # ms since the epoch, stamped by the server between send and receipt
            self.assertGreaterEqual(ev["ts"], t0 - 2000, "ts %r before the send" % ev)
            self.assertLessEqual(ev["ts"], t1 + 2000, "ts %r after the receipt" % ev)
        self.assertEqual(ev["from"], frm, ev)
        self.assertEqual(ev["to"], to, ev)
        self.assertEqual(ev["body"], body, ev)
        if sender_copy and cid is not None:
            self.assertEqual(ev.get("cid"), cid, "the sender's copy must carry the cid: %r" % ev)
        else:
            self.assertNotIn("cid", ev, "cid only on the sender's copy (and only when sent): %r" % ev)
        if meta is None:
            self.assertNotIn("meta", ev, ev)
        else:
            self.assertEqual(ev.get("meta"), meta, ev)
        if seq is not None:
            self.assertEqual(ev["seq"], seq, ev)

    def recv(self, client, timeout=5, **fields):
        """The next msg event on client's own inbox, with the raw message."""
        topic = "%s/inbox/%s" % (self.stack.prefix, client.user)
        m = client.wait_for(lambda m: m.topic == topic and isinstance(m.json, dict)
                            and m.json.get("type") == "msg"
                            and all(m.json.get(k) == v for k, v in fields.items()),
                            timeout, what="msg event %s on %s" % (fields, topic))
        return m

    def rows(self, msg_id):
        return self.stack.sql(
            "SELECT user_id, seq, from_user, to_user, cid, body, meta FROM messages "
            "WHERE kind = 'msg' AND id = %s ORDER BY user_id", (int(msg_id),))


class DMBasicTest(DMBase):

    def test_fields_ack_and_own_seq(self):
        """Every contract field on both copies; the sender's copy carries the
        cid and the sender's own seq; rows are committed before delivery."""
        for proto, pname in ((MQTTv311, "3.1.1"), (MQTTv5, "5")):
            with self.subTest(protocol=pname):
                u = self.users("alice", "bob", "carol")
                bob_phone = self.dev(u["bob"], "phone", protocol=proto)
                bob_laptop = self.dev(u["bob"], "laptop", protocol=proto)
                alice_phone = self.dev(u["alice"], "phone", protocol=proto)
                alice_laptop = self.dev(u["alice"], "laptop", protocol=proto)
                carol = self.dev(u["carol"], protocol=proto)
                A, B, C = u["alice"][0], u["bob"][0], u["carol"][0]

                # carol writes to bob first, so bob's counter and alice's differ
                carol.publish("chat/dm/%s" % B, {"cid": "c-0", "body": "from carol"})
                self.recv(carol, cid="c-0")
                for d in (bob_phone, bob_laptop):
                    self.assertMsg(self.recv(d).json, C, B, "from carol", False, seq=1)

                t0 = now_ms()
                alice_phone.publish("chat/dm/%s" % B, {"cid": "a-1", "body": "hello bob"})
                m = self.recv(bob_phone)
                # durable before it is delivered: both rows are committed by now
                rows = self.rows(m.json["id"])
                t1 = now_ms()
                ev_b = m.json
                self.assertMsg(ev_b, A, B, "hello bob", False, seq=2, t0=t0, t1=t1)
                self.assertEqual(sorted(r[0] for r in rows), sorted([A, B]),
                                 "both rows must be committed when bob receives the message: %r"
                                 % rows)
                self.assertEqual(m.qos, 1, "inbox events are QoS 1")
                self.assertFalse(m.retain, "inbox events are not retained")

                ev_b2 = self.recv(bob_laptop).json
                self.assertEqual(ev_b2, ev_b, "both of bob's devices get the same event")

                # the acknowledgement: the sender's copy, on every device of alice
                ack = self.recv(alice_phone).json
                self.assertMsg(ack, A, B, "hello bob", True, cid="a-1", seq=1, t0=t0, t1=now_ms())
                self.assertEqual(ack["id"], ev_b["id"], "one message id for both copies")
                self.assertEqual(ack["ts"], ev_b["ts"], "one ts for both copies")
                self.assertEqual(self.recv(alice_laptop).json, ack,
                                 "alice's other device sees her message (with the cid)")

                # the rows say the same
                byuser = {r[0]: r for r in rows}
                self.assertEqual(byuser[B][1:], (2, A, B, None, "hello bob", None))
                self.assertEqual(byuser[A][1:], (1, A, B, "a-1", "hello bob", None))

                # a reply: bob's seq 3 (his own counter), alice's seq 2
                bob_laptop.publish("chat/dm/%s" % A, {"cid": "b-1", "body": "hi alice"})
                r = self.recv(alice_phone).json
                self.assertMsg(r, B, A, "hi alice", False, seq=2)
                self.assertEqual(self.recv(alice_laptop).json, r)
                rb = self.recv(bob_laptop).json
                self.assertMsg(rb, B, A, "hi alice", True, cid="b-1", seq=3)
                self.assertEqual(rb["id"], r["id"])
                self.assertNotEqual(rb["id"], ack["id"], "every message has its own id")
                self.assertEqual(self.recv(bob_phone).json, rb,
                                 "bob's other device gets his own copy, cid included")

                # nothing else: one event per message per device
                for d in (alice_phone, alice_laptop, bob_phone, bob_laptop, carol):
                    d.expect_none(0.5)
                    d.disconnect()
                self.assertEqual(self.stack.sql(
                    "SELECT user_id, last_seq FROM inbox_counters WHERE user_id IN (%s, %s, %s) "
                    "ORDER BY user_id", (A, B, C)), sorted([(A, 2), (B, 3), (C, 1)]))

    def test_plain_text_payload(self):
        """A payload that is not JSON is the body, with no cid; also from
        mosquitto_pub -m hello."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"], "phone")
        for seq, text in enumerate(["hello", "héllo wörld ✓ 😀", "not {json", "  two words  "], 1):
            alice.publish("chat/dm/%s" % B, text)
            self.assertMsg(self.recv(bob).json, A, B, text, False, seq=seq)
            self.assertMsg(self.recv(alice).json, A, B, text, True, seq=seq)

        exe = shutil.which("mosquitto_pub")
        self.assertIsNotNone(exe, "mosquitto_pub is missing (mosquitto-clients)")
        r = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(self.stack.mqtt_port), "-q", "1",
                            "-u", A, "-P", u["alice"][1], "-i", "%s:cli" % A,
                            "-t", "chat/dm/%s" % B, "-m", "hello"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=20 * SLOW, env=dict(os.environ, LD_PRELOAD=""))
        self.assertEqual(r.returncode, 0, "mosquitto_pub failed: %s" % r.stdout)
        ev = self.recv(bob).json
        self.assertMsg(ev, A, B, "hello", False, seq=5)
        self.assertMsg(self.recv(alice).json, A, B, "hello", True, seq=5)
        self.assertEqual(self.stack.sql("SELECT count(*) FROM messages WHERE id = %s AND cid IS NULL",
                                        (int(ev["id"]),)), [(2,)])
        bob.expect_none(0.5)
        alice.expect_none(0.2)

    def test_meta_round_trip(self):
        """meta is an object stored and returned as is, on both copies."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        meta = {"reply_to": "12345", "mentions": ["x", "y"], "n": 3, "pi": 3.25, "ok": True,
                "none": None, "deep": {"a": {"b": [1, {"c": "ü ✓"}]}}, "empty": {}, "": "blank key"}
        alice.publish("chat/dm/%s" % B, {"cid": "m-1", "body": "with meta", "meta": meta})
        ev = self.recv(bob).json
        self.assertMsg(ev, A, B, "with meta", False, meta=meta, seq=1)
        self.assertMsg(self.recv(alice).json, A, B, "with meta", True, cid="m-1", meta=meta, seq=1)
        stored = self.stack.sql("SELECT user_id, meta FROM messages WHERE id = %s", (int(ev["id"]),))
        self.assertEqual(len(stored), 2, stored)
        for user, text in stored:
            self.assertEqual(json.loads(text), meta, "meta stored for %s" % user)

        # an empty object round-trips too; no meta means no meta key
        alice.publish("chat/dm/%s" % B, {"cid": "m-2", "body": "empty meta", "meta": {}})
        self.assertMsg(self.recv(bob).json, A, B, "empty meta", False, meta={}, seq=2)
        self.assertMsg(self.recv(alice).json, A, B, "empty meta", True, cid="m-2", meta={}, seq=2)
        alice.publish("chat/dm/%s" % B, {"cid": "m-3", "body": "no meta"})
        self.assertMsg(self.recv(bob).json, A, B, "no meta", False, seq=3)
        self.assertMsg(self.recv(alice).json, A, B, "no meta", True, cid="m-3", seq=3)

    def test_special_bodies(self):
        """Bodies with JSON escapes, quotes, newlines and non-ASCII arrive
        exactly as sent."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        bodies = ['say "hi"', "back\\slash", "line1\nline2\ttab", "😀 ünïcödé \u2028", "",
                  "{\"looks\": \"like json\"}", "x" * 500]
        for seq, body in enumerate(bodies, 1):
            alice.publish("chat/dm/%s" % B, {"cid": "s-%d" % seq, "body": body})
            self.assertMsg(self.recv(bob).json, A, B, body, False, seq=seq)
            self.assertMsg(self.recv(alice).json, A, B, body, True, cid="s-%d" % seq, seq=seq)


class DMRetainTest(DMBase):
    """The retain flag on a send is ignored: the message is delivered as
    usual and nothing is retained under chat/dm/. Own stack: the broker is
    stopped to read its persistence file."""

    def test_retain_flag_ignored(self):
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        alice.publish("chat/dm/%s" % B, {"cid": "r-1", "body": "retained?"}, retain=True)
        m = self.recv(bob)
        self.assertMsg(m.json, A, B, "retained?", False, seq=1)
        self.assertFalse(m.retain)
        self.assertMsg(self.recv(alice).json, A, B, "retained?", True, cid="r-1", seq=1)
        alice.publish("chat/dm/%s" % B, "plain retained", retain=True)
        self.recv(bob, body="plain retained")

        # a new subscriber of bob's inbox gets nothing retained
        late = self.dev(u["bob"], "late")
        late.expect_none(1.0)
        # positive control: an ordinary retained message outside the prefix
        anon = self.stack.client(None, None, subscribe_inbox=False)
        anon.publish("dmtest/retained-control", b"kept", retain=True)
        time.sleep(0.2)
        for c in (bob, alice, late, anon):
            c.disconnect()
        # mosquitto writes its retained messages to the persistence file on exit
        self.stack.stop_broker()
        db = os.path.join(self.stack.persist_dir, "mosquitto.db")
        self.assertTrue(os.path.exists(db), "no persistence file %s" % db)
        with open(db, "rb") as f:
            data = f.read()
        self.assertIn(b"dmtest/retained-control", data,
                      "the persistence check does not work: the control message is missing")
        self.assertNotIn(b"chat/dm/", data, "a DM was retained")
        self.assertNotIn(b"retained?", data, "a DM payload was retained")
        self.stack.start_broker()
        # still a working broker afterwards
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        alice.publish("chat/dm/%s" % B, {"cid": "r-2", "body": "after"})
        self.assertMsg(self.recv(bob).json, A, B, "after", False, seq=3)


if __name__ == "__main__":
    main()
