#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 03-dm-idempotent: a (sender, cid) pair is stored once. Sending it again -
# a client retry, a QoS 1 retransmission with the DUP flag, from the same
# or another device of the sender, before or after a broker restart - gives
# the sending device the stored copy again (same id, same seq, the first
# body) and nobody else anything; the sender's counter does not move.
#
# What the contract does not promise: without a cid the server cannot tell
# a retransmission from a new message. Mosquitto 2.0 hands the plugin every
# PUBLISH it receives, QoS 1 duplicates included, and even a QoS 2
# duplicate (it calls the plugin before its own QoS 2 de-duplication), so a
# cid-less retransmission may be stored twice. The tests below pin down what
# must hold either way: every stored copy is complete and consistent (an
# acknowledgement for each, gap-free seq on both sides, rows = events).

import queue
import secrets
import socket
import struct
import threading
import time

from chatstack import SLOW, StackTestCase, main


# --------------------------------------------------------------------------
# a hand-made MQTT 3.1.1 client: it sends exactly the packets it is told to,
# so a retransmission (same packet id, DUP=1) can be produced on purpose.

def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 2, 3, 4, 5, 6, 7, 9


class RawMQTT:
    """MQTT 3.1.1 over a plain socket. Incoming QoS 1/2 PUBLISHes are
    acknowledged and recorded (self.publishes); every other packet goes to
    a queue read with next_packet()."""

    def __init__(self, port, user, password, client_id, clean=True):
        self.client_id = client_id
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        self.sock.settimeout(None)
        self._lock = threading.Lock()
        self.packets = queue.Queue()
        self.cond = threading.Condition()
        self.publishes = []  # (topic, payload, qos, dup, retain)
        self.closed = False
        flags = 0xC0 | (0x02 if clean else 0)
        body = (_str("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + _str(client_id)
                + _str(user) + _str(password))
        self.send(0x10, body)
        self.thread = threading.Thread(target=self._reader, daemon=True, name="raw-" + client_id)
        self.thread.start()
        _, b = self.next_packet((CONNACK,))
        if b[1] != 0:
            raise AssertionError("%s: CONNACK %d" % (client_id, b[1]))
        self.session_present = bool(b[0] & 1)

    def send(self, first, body):
        with self._lock:
            self.sock.sendall(bytes([first]) + _varint(len(body)) + body)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            c = self.sock.recv(n - len(buf))
            if not c:
                raise EOFError
            buf += c
        return buf

    def _reader(self):
        try:
            while True:
                h = self._exact(1)[0]
                mult, rl = 1, 0
                while True:
                    b = self._exact(1)[0]
                    rl += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                body = self._exact(rl) if rl else b""
                t = h >> 4
                if t == PUBLISH:
                    qos = (h >> 1) & 3
                    tl = struct.unpack("!H", body[:2])[0]
                    topic = body[2:2 + tl].decode("utf-8")
                    pos = 2 + tl
                    if qos:
                        self.send(0x40 if qos == 1 else 0x50, body[pos:pos + 2])
                        pos += 2
                    with self.cond:
                        self.publishes.append((topic, body[pos:], qos, bool(h & 8), bool(h & 1)))
                        self.cond.notify_all()
                elif t == PUBREL:
                    self.send(0x70, body[:2])
                else:
                    self.packets.put((t, body))
        except (EOFError, OSError):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()
            self.packets.put((None, b""))

    def next_packet(self, types, timeout=5.0):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no packet of type %s" % (self.client_id, types))
            try:
                t, b = self.packets.get(timeout=left)
            except queue.Empty:
                continue
            if t is None:
                raise AssertionError("%s: connection closed waiting for %s" % (self.client_id,
                                                                                 types))
            if t in types:
                return t, b

    def subscribe(self, topic, qos=1, pid=1):
        self.send(0x82, struct.pack("!H", pid) + _str(topic) + bytes([qos]))
        _, b = self.next_packet((SUBACK,))
        return list(b[2:])

    def publish(self, topic, payload, qos=1, pid=1, dup=False, retain=False):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
        self.send(first, _str(topic) + (struct.pack("!H", pid) if qos else b"") + payload)

    def events(self, n, timeout=5.0):
        """Wait until n PUBLISHes have arrived in total; return them (JSON)."""
        import json
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.publishes) >= n or self.closed,
                                    timeout * SLOW)
            got = list(self.publishes)
        if not ok or len(got) < n:
            raise AssertionError("%s: %d of %d events: %r" % (self.client_id, len(got), n, got))
        return [(t, json.loads(p)) for t, p, _, _, _ in got]

    def close(self, clean=True):
        try:
            if clean:
                self.send(0xE0, b"")
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


class DMIdempotentTest(StackTestCase):
    stack_options = {"presence_debounce_ms": 600000}

    def users(self, *names):
        tag = secrets.token_hex(3)
        out = {}
        for n in names:
            uid, pw = "%s-%s" % (n, tag), "pw-%s" % n
            self.stack.add_user(uid, pw)
            out[n] = (uid, pw)
        return out

    def dev(self, u, device=None):
        return self.stack.client(u[0], u[1], device=device)

    def msg(self, client, timeout=5, **fields):
        return client.wait_event("msg", timeout=timeout,
                                 topic="chat/inbox/%s" % client.user, **fields)

    def count_rows(self, user, **where):
        cond = " AND ".join("%s = %%s" % k for k in where)
        q = "SELECT count(*) FROM messages WHERE user_id = %s" + (" AND " + cond if cond else "")
        return self.stack.sql(q, (user,) + tuple(where.values()))[0][0]

    def last_seq(self, user):
        r = self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s", (user,))
        return r[0][0]

    def test_same_cid_twice(self):
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        phone = self.dev(u["alice"], "phone")
        laptop = self.dev(u["alice"], "laptop")

        phone.publish("chat/dm/%s" % B, {"cid": "dup-1", "body": "first"})
        first = self.msg(bob, body="first")
        ack = self.msg(phone, cid="dup-1")
        self.assertEqual(self.msg(laptop, cid="dup-1"), ack)
        self.assertEqual((ack["id"], ack["seq"], first["seq"]), (first["id"], 1, 1))

        # the same cid again, other body: the stored copy, to the sending device only
        phone.publish("chat/dm/%s" % B, {"cid": "dup-1", "body": "second"})
        again = self.msg(phone, cid="dup-1")
        self.assertEqual(again, ack, "a repeated cid must give back the stored copy (same id, "
                         "seq, ts and first body)")
        laptop.expect_none(1.0, what="copy of a duplicate on another device")
        bob.expect_none(0.2, what="duplicate delivered to the recipient")
        phone.expect_none(0.2)

        # from alice's other device: that device gets the stored copy
        laptop.publish("chat/dm/%s" % B, {"cid": "dup-1", "body": "third"})
        self.assertEqual(self.msg(laptop, cid="dup-1"), ack)
        phone.expect_none(1.0, what="copy of a duplicate on the device that did not send it")
        bob.expect_none(0.2)

        self.assertEqual(self.count_rows(A, cid="dup-1"), 1)
        self.assertEqual(self.count_rows(B), 1)
        self.assertEqual((self.last_seq(A), self.last_seq(B)), (1, 1))

        # the counters did not move: the next message is seq 2 on both sides
        phone.publish("chat/dm/%s" % B, {"cid": "dup-2", "body": "next"})
        self.assertEqual(self.msg(bob, body="next")["seq"], 2)
        self.assertEqual(self.msg(phone, cid="dup-2")["seq"], 2)
        self.assertEqual(self.msg(laptop, cid="dup-2")["seq"], 2)

        # the same cid from another sender is another message
        u2 = self.users("carol")
        carol = self.dev(u2["carol"])
        carol.publish("chat/dm/%s" % B, {"cid": "dup-1", "body": "carol's"})
        self.assertEqual(self.msg(bob, body="carol's")["seq"], 3)
        self.assertEqual(self.msg(carol, cid="dup-1")["seq"], 1)

        # the same cid to another recipient is still the same (sender, cid)
        phone.publish("chat/dm/%s" % u2["carol"][0], {"cid": "dup-1", "body": "to carol"})
        self.assertEqual(self.msg(phone, cid="dup-1"), ack)
        carol.expect_none(1.0)
        bob.expect_none(0.1)

    def test_burst_of_duplicates(self):
        """The same cid several times in one burst (one writer batch): one
        stored message; the sending device gets one copy per send, all the
        same."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        phone = self.dev(u["alice"], "phone")
        laptop = self.dev(u["alice"], "laptop")
        infos = [phone.c.publish("chat/dm/%s" % B, '{"cid":"burst","body":"b%d"}' % i, qos=1)
                 for i in range(5)]
        deadline = time.monotonic() + 10 * SLOW
        for info in infos:
            while not info.is_published():
                self.assertLess(time.monotonic(), deadline, "no PUBACK")
                time.sleep(0.005)
        copies = [self.msg(phone, cid="burst") for _ in range(5)]
        self.assertEqual(len({(c["id"], c["seq"], c["body"]) for c in copies}), 1, copies)
        self.assertEqual(copies[0]["body"], "b0", "the first send is the one stored")
        self.assertEqual(self.msg(laptop, cid="burst"), copies[0])
        laptop.expect_none(1.0)
        self.assertEqual(self.msg(bob)["id"], copies[0]["id"])
        bob.expect_none(0.3)
        phone.expect_none(0.1)
        self.assertEqual((self.count_rows(A), self.count_rows(B)), (1, 1))

    def test_qos1_retransmission_with_cid(self):
        """A hand-made QoS 1 PUBLISH sent twice with the same packet id, the
        second with DUP=1: stored once, bob gets one message; the raw device
        gets the acknowledgement and the stored copy again."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        laptop = self.dev(u["alice"], "laptop")
        raw = RawMQTT(self.stack.mqtt_port, A, u["alice"][1], "%s:raw" % A)
        try:
            self.assertEqual(raw.subscribe("chat/inbox/%s" % A), [1])
            payload = '{"cid":"rt-1","body":"retransmitted"}'
            # back to back: the retransmission reaches the broker before
            # the first PUBACK was read (a PUBACK lost on the way)
            raw.publish("chat/dm/%s" % B, payload, qos=1, pid=7)
            raw.publish("chat/dm/%s" % B, payload, qos=1, pid=7, dup=True)
            for _ in range(2):
                _, b = raw.next_packet((PUBACK,))
                self.assertEqual(b[:2], b"\x00\x07")
            evs = raw.events(2)
            self.assertEqual(evs[0][1], evs[1][1], "the raw device: ack and stored copy agree")
            ev = evs[0][1]
            self.assertEqual((ev["cid"], ev["seq"], ev["body"]), ("rt-1", 1, "retransmitted"))
            self.assertEqual(self.msg(bob, body="retransmitted")["id"], ev["id"])
            self.assertEqual(self.msg(laptop, cid="rt-1"), ev)
            bob.expect_none(1.0, what="second copy of a retransmitted message")
            laptop.expect_none(0.1)

            # a retransmission after the acknowledgement was received (the
            # client lost its state, reconnected and resent): the same
            raw.publish("chat/dm/%s" % B, payload, qos=1, pid=7, dup=True)
            raw.next_packet((PUBACK,))
            evs = raw.events(3)
            self.assertEqual(evs[2][1], ev)
            bob.expect_none(1.0)
            laptop.expect_none(0.1)
            self.assertEqual((self.count_rows(A), self.count_rows(B)), (1, 1))
        finally:
            raw.close()

        # the realistic case: connection lost before the PUBACK, the session
        # resumed (clean session off) and the message resent with DUP=1
        raw = RawMQTT(self.stack.mqtt_port, A, u["alice"][1], "%s:raw2" % A, clean=False)
        try:
            raw.subscribe("chat/inbox/%s" % A)
            payload2 = '{"cid":"rt-2","body":"resent after reconnect"}'
            raw.publish("chat/dm/%s" % B, payload2, qos=1, pid=9)
        finally:
            raw.close(clean=False)
        first = self.msg(bob, body="resent after reconnect")
        raw = RawMQTT(self.stack.mqtt_port, A, u["alice"][1], "%s:raw2" % A, clean=False)
        try:
            self.assertTrue(raw.session_present)
            raw.publish("chat/dm/%s" % B, payload2, qos=1, pid=9, dup=True)
            raw.next_packet((PUBACK,))
            # two copies: the acknowledgement kept in the session (it was
            # published after the connection was gone) and the stored copy
            # answering the resend
            raw.events(2)
            time.sleep(0.5)  # and no third
            evs = [e for t, e in raw.events(2) if e.get("cid") == "rt-2"]
            self.assertEqual(len(evs), 2, evs)
            for e in evs:
                self.assertEqual((e["id"], e["seq"], e["body"]), (first["id"], 2,
                                                                 "resent after reconnect"))
            bob.expect_none(1.0, what="second copy of a resent message")
            self.assertEqual((self.count_rows(A), self.count_rows(B)), (2, 2))
        finally:
            raw.close()

    def test_retransmission_without_cid(self):
        """Without a cid nothing identifies a retransmission: the contract
        only promises that whatever is stored is stored completely and
        consistently. Observed (Mosquitto 2.0.11): both QoS 1 and QoS 2
        duplicates are stored twice."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        raw = RawMQTT(self.stack.mqtt_port, A, u["alice"][1], "%s:raw" % A)
        observed = {}
        try:
            raw.subscribe("chat/inbox/%s" % A)
            acks = 0
            seq = 0
            for qos, pid, text in ((1, 11, "no cid, qos 1"), (2, 12, "no cid, qos 2")):
                raw.publish("chat/dm/%s" % B, text, qos=qos, pid=pid)
                raw.publish("chat/dm/%s" % B, text, qos=qos, pid=pid, dup=True)
                if qos == 1:
                    raw.next_packet((PUBACK,))
                    raw.next_packet((PUBACK,))
                else:
                    raw.next_packet((PUBREC,))
                    raw.next_packet((PUBREC,))
                    raw.send(0x62, struct.pack("!H", pid))
                    raw.next_packet((PUBCOMP,))
                time.sleep(1.5 * SLOW)  # let everything that will come arrive
                stored = self.stack.sql("SELECT seq, id::text FROM messages WHERE user_id = %s "
                                        "AND body = %s ORDER BY seq", (B, text))
                n = len(stored)
                observed[qos] = n
                self.assertIn(n, (1, 2), "qos %d: %d copies stored" % (qos, n))
                got = [bob.wait_event("msg", body=text) for _ in range(n)]
                bob.expect_none(0.3, what="more copies than stored")
                self.assertEqual([(e["seq"], e["id"]) for e in got], stored)
                self.assertEqual([e["seq"] for e in got], list(range(seq + 1, seq + n + 1)))
                acks += n
                seq += n
                evs = raw.events(acks)
                self.assertEqual(len(raw.publishes), acks, "one acknowledgement per stored copy")
                self.assertEqual([e["id"] for _, e in evs[-n:]], [e["id"] for e in got])
            self.assertEqual(self.count_rows(A), acks)
            self.assertEqual((self.last_seq(A), self.last_seq(B)), (acks, acks))
        finally:
            raw.close()
        print("\nwithout a cid, a retransmitted PUBLISH was stored %d time(s) at QoS 1 and "
              "%d time(s) at QoS 2" % (observed.get(1), observed.get(2)))

    def test_duplicate_after_restart(self):
        """After a broker restart the writer's memory of recent cids is gone:
        a repeated cid is still found in the database."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"], "phone")
        alice.publish("chat/dm/%s" % B, {"cid": "keep-1", "body": "before restart",
                                          "meta": {"k": [1]}})
        ack = self.msg(alice, cid="keep-1")
        self.msg(bob)
        bob.disconnect()
        alice.disconnect()
        self.stack.stop_broker()
        self.stack.start_broker()
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"], "phone")
        other = self.dev(u["alice"], "tablet")
        alice.publish("chat/dm/%s" % B, {"cid": "keep-1", "body": "after restart"})
        self.assertEqual(self.msg(alice, cid="keep-1"), ack)
        bob.expect_none(1.0)
        other.expect_none(0.1)
        self.assertEqual((self.count_rows(A), self.count_rows(B)), (1, 1))
        alice.publish("chat/dm/%s" % B, {"cid": "keep-2", "body": "new"})
        self.assertEqual(self.msg(bob, body="new")["seq"], 2)
        self.assertEqual(self.msg(alice, cid="keep-2")["seq"], 2)


if __name__ == "__main__":
    main()
