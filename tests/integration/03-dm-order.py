#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 03-dm-order: concurrent senders, one recipient. Three senders publish 200
# messages each (QoS 1, pipelined: all sent at once) to bob, who has two
# devices subscribed. bob's seq must be 1..600, each exactly once, in
# arrival order on both devices, with the identical sequence of ids on both;
# each sender's messages keep their sending order; every sender's
# acknowledgements carry its own gap-free seq; the messages table holds the
# same set.

import json
import secrets
import threading
import time

import paho.mqtt.client as mqtt

from chatstack import SLOW, StackTestCase, main

SENDERS = 3
PER_SENDER = 200


class Sender:
    """A plain paho client on loop_start(), subscribed to its own inbox."""

    def __init__(self, port, user, password, client_id):
        self.cond = threading.Condition()
        self.received = []
        self.subscribed = False
        self.c = mqtt.Client(client_id=client_id, clean_session=True)
        self.c.username_pw_set(user, password)
        self.c.max_inflight_messages_set(0)  # unlimited: send everything at once
        self.c.max_queued_messages_set(0)
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_connect = lambda c, u, f, rc: c.subscribe("chat/inbox/%s" % user, 1)
        self.c.connect("127.0.0.1", port, 60)
        self.c.loop_start()
        with self.cond:
            if not self.cond.wait_for(lambda: self.subscribed, 10 * SLOW):
                raise AssertionError("%s: not connected and subscribed" % client_id)

    def _on_subscribe(self, c, u, mid, granted):
        with self.cond:
            self.subscribed = granted[0] < 0x80
            self.cond.notify_all()

    def _on_message(self, c, u, m):
        with self.cond:
            self.received.append(("%s" % m.topic, json.loads(m.payload)))
            self.cond.notify_all()

    def publish(self, topic, payload, qos=1):
        return self.c.publish(topic, payload, qos=qos)

    def acks(self, n, timeout):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise AssertionError("%d of %d acknowledgements" % (len(self.received), n))
            return list(self.received[:n])

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class DMOrderTest(StackTestCase):
    stack_options = {"presence_debounce_ms": 600000}

    def sender(self, user, pw):
        c = Sender(self.stack.mqtt_port, user, pw, "%s:d" % user)
        self.addCleanup(c.close)
        return c

    def test_three_senders_one_recipient(self):
        tag = secrets.token_hex(3)
        bob_id, bob_pw = "bob-%s" % tag, "pw-bob"
        self.stack.add_user(bob_id, bob_pw)
        senders = []
        for i in range(SENDERS):
            sid = "s%d-%s" % (i, tag)
            self.stack.add_user(sid, "pw-%d" % i)
            senders.append((sid, "pw-%d" % i))

        phone = self.stack.client(bob_id, bob_pw, device="phone")
        laptop = self.stack.client(bob_id, bob_pw, device="laptop")
        clients = [self.sender(sid, pw) for sid, pw in senders]
        topic = "chat/dm/%s" % bob_id
        errors = []

        def send(c, sid):
            # pipelined, as a phone catching up would: every message goes out
            # at once (unlimited in-flight window), so the writer sees
            # interleaved bursts of all three senders. A paho client driven
            # by loop_start() writes from its own thread only, which keeps
            # the packets in publish order (the harness's wrapper may write
            # from two threads, fine for one message at a time only).
            try:
                infos = []
                for k in range(PER_SENDER):
                    payload = json.dumps({"cid": "%s-%04d" % (sid, k), "body": "%s #%d" % (sid, k)})
                    info = c.publish(topic, payload, qos=1)
                    if info.rc != 0:
                        raise AssertionError("publish #%d failed: rc %d" % (k, info.rc))
                    infos.append(info)
                deadline = time.monotonic() + 60 * SLOW
                for k, info in enumerate(infos):
                    while not info.is_published():
                        if time.monotonic() > deadline:
                            raise AssertionError("no PUBACK for #%d" % k)
                        time.sleep(0.005)
            except Exception as e:  # reported below
                errors.append("%s: %s" % (sid, e))

        threads = [threading.Thread(target=send, args=(c, s[0])) for c, s in zip(clients, senders)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120 * SLOW)
        self.assertFalse(errors, errors)
        total = SENDERS * PER_SENDER

        inbox = "chat/inbox/%s" % bob_id

        def collect(c, n, what):
            out = []
            deadline = time.monotonic() + 60 * SLOW
            while len(out) < n:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "%s: only %d of %d events arrived" % (what, len(out), n))
                m = c.wait_for(lambda m: m.topic.startswith("chat/inbox/"), left, what=what)
                ev = m.json
                self.assertIsInstance(ev, dict, m)
                self.assertEqual(ev.get("type"), "msg", "%s: unexpected event %r" % (what, ev))
                out.append((m.topic, ev))
            return out

        got = {}
        for name, dev in (("bob:phone", phone), ("bob:laptop", laptop)):
            evs = collect(dev, total, name)
            self.assertTrue(all(t == inbox for t, _ in evs), "%s: events on other topics" % name)
            seqs = [e["seq"] for _, e in evs]
            self.assertEqual(seqs, list(range(1, total + 1)),
                             "%s: seq must be 1..%d, once each, in order; first deviation at %s" % (
                                 name, total, next((i for i, (a, b) in enumerate(
                                     zip(seqs, range(1, total + 1))) if a != b), None)))
            for _, e in evs:
                self.assertNotIn("cid", e, "the recipient's copy carries no cid")
                self.assertEqual(e["to"], bob_id)
            ids = [e["id"] for _, e in evs]
            self.assertEqual(len(set(ids)), total, "%s: duplicate ids" % name)
            # per sender, the order of sending is kept
            for sid, _ in senders:
                mine = [e["body"] for _, e in evs if e["from"] == sid]
                self.assertEqual(mine, ["%s #%d" % (sid, k) for k in range(PER_SENDER)],
                                 "%s: messages of %s missing or out of order" % (name, sid))
            got[name] = evs
            dev.expect_none(0.5, what="event beyond the %d expected" % total)
        elapsed = time.monotonic() - t0
        self.assertEqual([e["id"] for _, e in got["bob:phone"]],
                         [e["id"] for _, e in got["bob:laptop"]],
                         "both devices must see the identical sequence of ids")
        self.assertEqual([e for _, e in got["bob:phone"]], [e for _, e in got["bob:laptop"]])

        # every sender: 200 acknowledgements, own seq 1..200, in sending order
        bob_by_id = {e["id"]: e for _, e in got["bob:phone"]}
        for c, (sid, _) in zip(clients, senders):
            acks = c.acks(PER_SENDER, 30 * SLOW)
            self.assertEqual([e["seq"] for _, e in acks], list(range(1, PER_SENDER + 1)),
                             "%s: own seq of the acknowledgements" % sid)
            self.assertEqual([e.get("cid") for _, e in acks],
                             ["%s-%04d" % (sid, k) for k in range(PER_SENDER)])
            for _, e in acks:
                peer = bob_by_id.get(e["id"])
                self.assertIsNotNone(peer, "%s: ack %r has no copy at bob" % (sid, e))
                self.assertEqual((e["ts"], e["body"], e["from"], e["to"]),
                                 (peer["ts"], peer["body"], peer["from"], peer["to"]))
            time.sleep(0.3)
            self.assertEqual(len(c.received), PER_SENDER, "%s: more events than sent" % sid)

        # the table holds the same set
        rows = self.stack.sql("SELECT seq, id::text FROM messages WHERE user_id = %s ORDER BY seq",
                              (bob_id,))
        self.assertEqual(rows, [(e["seq"], e["id"]) for _, e in got["bob:phone"]])
        for sid, _ in senders:
            r = self.stack.sql("SELECT count(*), min(seq), max(seq), count(DISTINCT cid) FROM messages "
                               "WHERE user_id = %s", (sid,))
            self.assertEqual(r, [(PER_SENDER, 1, PER_SENDER, PER_SENDER)], sid)
        self.assertEqual(self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s",
                                        (bob_id,)), [(total,)])
        print("\n%d messages from %d senders stored and delivered in %.2fs" % (total, SENDERS,
                                                                               elapsed))


if __name__ == "__main__":
    main()
