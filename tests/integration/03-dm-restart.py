#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 03-dm-restart: the broker goes away. After SIGTERM (clean) or SIGKILL
# (crash) and a start, seq continues where it stopped (the next message is
# last + 1, nothing acknowledged is lost) and messages queued for an
# offline persistent session survive the restart. The spool outlives the
# broker: batches spooled while PostgreSQL was down are replayed after a
# restart, also when the spool ends in a torn record (a crash inside a
# write), which is reported in the log and cut off without harm.
# Runs on a private cluster (own_pg) so that PostgreSQL can be stopped.

import os
import re
import secrets
import signal
import time

from chatstack import SLOW, StackTestCase, main, tail


class DMRestartTest(StackTestCase):
    stack_own_pg = True
    stack_options = {"presence_debounce_ms": 600000}

    def users(self, *names):
        tag = secrets.token_hex(3)
        out = {}
        for n in names:
            uid, pw = "%s-%s" % (n, tag), "pw-%s" % n
            self.stack.add_user(uid, pw)
            out[n] = (uid, pw)
        return out

    def dev(self, u, device=None, **kw):
        return self.stack.client(u[0], u[1], device=device, **kw)

    @property
    def spool_file(self):
        return os.path.join(self.stack.spool_dir, "chat.spool")

    def spool_size(self):
        return os.path.getsize(self.spool_file) if os.path.exists(self.spool_file) else 0

    def wait_log(self, pattern, start, timeout=30):
        deadline = time.monotonic() + timeout * SLOW
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.stack.broker_log[start:])
            if m:
                return m
            if time.monotonic() > deadline:
                self.fail("broker log never showed /%s/; last lines:\n%s" % (
                    pattern, tail(self.stack.broker_log[start:], 60)))
            time.sleep(0.1)

    def check_inbox(self, user, n):
        seqs = [r[0] for r in self.stack.sql(
            "SELECT seq FROM messages WHERE user_id = %s ORDER BY seq", (user,))]
        self.assertEqual(seqs, list(range(1, n + 1)), "%s: rows must be seq 1..%d" % (user, n))
        self.assertEqual(self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s",
                                        (user,)), [(n,)])

    def send(self, alice, bob, B, cid, body, seq_a, seq_b, timeout=5):
        alice.publish("chat/dm/%s" % B, {"cid": cid, "body": body})
        ack = alice.wait_event("msg", cid=cid, timeout=timeout)
        self.assertEqual(ack["seq"], seq_a, "sender's seq of %s: %r" % (cid, ack))
        if bob is not None:
            ev = bob.wait_event("msg", body=body, timeout=timeout)
            self.assertEqual(ev["seq"], seq_b, "recipient's seq of %s: %r" % (cid, ev))
            self.assertEqual(ev["id"], ack["id"])
        return ack

    def restart(self, sig=signal.SIGTERM):
        rc = self.stack.stop_broker(sig)
        if sig == signal.SIGTERM:
            self.assertIn(rc, (0, -signal.SIGTERM), "mosquitto exit status on SIGTERM")
        self.stack.start_broker()

    def test_sigterm_seq_continues_and_queued_survive(self):
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        alice = self.dev(u["alice"])
        # bob's phone keeps a persistent session; his laptop is a clean one
        phone = self.dev(u["bob"], "phone", clean_session=False)
        laptop = self.dev(u["bob"], "laptop")
        for k in range(1, 4):
            self.send(alice, laptop, B, "t-%d" % k, "before %d" % k, k, k)
            self.assertEqual(phone.wait_event("msg", body="before %d" % k)["seq"], k)
        phone.disconnect()
        # sent while the phone is offline: queued in its session
        for k in range(4, 6):
            self.send(alice, laptop, B, "t-%d" % k, "offline %d" % k, k, k)
        laptop.disconnect()
        alice.disconnect()
        log0 = len(self.stack.broker_log)
        self.restart()
        self.wait_log(r"chat: store: connected to postgres", log0)
        phone = self.dev(u["bob"], "phone", clean_session=False)
        self.assertTrue(phone.session_present, "the persistent session did not survive")
        got = [phone.wait_event("msg", body="offline %d" % k, timeout=10)["seq"] for k in (4, 5)]
        self.assertEqual(got, [4, 5], "queued messages after the restart")
        alice = self.dev(u["alice"])
        laptop = self.dev(u["bob"], "laptop")
        self.send(alice, laptop, B, "t-6", "after restart", 6, 6)
        self.assertEqual(phone.wait_event("msg", body="after restart")["seq"], 6)
        # a reply continues bob's and alice's counters alike
        laptop.publish("chat/dm/%s" % A, {"cid": "r-1", "body": "reply"})
        self.assertEqual(alice.wait_event("msg", body="reply")["seq"], 7)
        self.assertEqual(laptop.wait_event("msg", cid="r-1")["seq"], 7)
        self.check_inbox(A, 7)
        self.check_inbox(B, 7)
        phone.disconnect()

    def test_sigkill_nothing_acknowledged_is_lost(self):
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        alice = self.dev(u["alice"])
        bob = self.dev(u["bob"])
        acks = [self.send(alice, bob, B, "k-%d" % k, "m%d" % k, k, k) for k in range(1, 21)]
        # the last acknowledgement arrived: kill at once
        self.stack.stop_broker(signal.SIGKILL)
        self.stack.start_broker()
        rows = self.stack.sql("SELECT cid, seq, id::text FROM messages WHERE user_id = %s "
                              "ORDER BY seq", (A,))
        self.assertEqual(rows, [(a["cid"], a["seq"], a["id"]) for a in acks])
        alice = self.dev(u["alice"])
        bob = self.dev(u["bob"])
        self.send(alice, bob, B, "k-21", "after crash", 21, 21)
        self.check_inbox(A, 21)
        self.check_inbox(B, 21)

    def spooled_restart(self, junk):
        """Spool 5 messages while PostgreSQL is down, stop the broker,
        optionally append junk to the spool, start the broker while
        PostgreSQL is still down, then start PostgreSQL."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        alice = self.dev(u["alice"])
        bob = self.dev(u["bob"])
        self.send(alice, bob, B, "s-1", "stored", 1, 1)
        self.stack.stop_postgres("fast")
        pg_up = False
        try:
            acks = [self.send(alice, bob, B, "s-%d" % k, "spooled %d" % k, k, k, timeout=10)
                    for k in range(2, 7)]
            bob.disconnect()
            alice.disconnect()
            rc = self.stack.stop_broker()
            self.assertIn(rc, (0, -signal.SIGTERM), "mosquitto exit status on SIGTERM")
            size = self.spool_size()
            self.assertGreater(size, 0, "nothing spooled")
            if junk:
                with open(self.spool_file, "ab") as f:
                    f.write(junk)
            log0 = len(self.stack.broker_log)
            self.stack.start_broker()
            m = self.wait_log(r"chat: store: (\d+) spooled batches wait for replay", log0)
            self.assertGreater(int(m.group(1)), 0)
            if junk:
                m = self.wait_log(r"torn tail of (\d+) bytes", log0)
                self.assertEqual(int(m.group(1)), len(junk), "size of the torn tail reported")
                self.assertEqual(self.spool_size(), size, "the torn tail was not cut off")
            self.stack.start_postgres()
            pg_up = True
        finally:
            if not pg_up:
                self.stack.start_postgres()
        self.wait_log(r"postgres is back, replaying \d+ spooled batches", log0, 60)
        self.wait_log(r"chat: store: spool replayed", log0, 60)
        self.assertNotIn("is corrupt", self.stack.broker_log[log0:])
        self.stack.wait_user(A, "pw-alice", timeout=20)
        self.assertEqual(self.spool_size(), 0)
        rows = self.stack.sql("SELECT cid, seq, id::text, body FROM messages WHERE user_id = %s "
                              "AND seq > 1 ORDER BY seq", (A,))
        self.assertEqual(rows, [(a["cid"], a["seq"], a["id"], a["body"]) for a in acks],
                         "every acknowledged message, exactly once, as acknowledged")
        self.check_inbox(A, 6)
        self.check_inbox(B, 6)
        alice = self.dev(u["alice"])
        bob = self.dev(u["bob"])
        self.send(alice, bob, B, "s-7", "after replay", 7, 7)
        # counters must include the replayed rows: no clash, no retried batch
        self.assertNotIn("batch failed", self.stack.broker_log[log0:],
                         "the first batch after the replay clashed with replayed rows")
        self.check_inbox(A, 7)
        self.check_inbox(B, 7)
        return log0

    def test_spool_replayed_after_restart(self):
        self.spooled_restart(None)

    def test_spool_torn_tail_with_pending_records(self):
        # the start of a record header and a few body bytes: a write cut short
        self.spooled_restart(b"CHS1\x00\x01\x00\x00\xde\xad\xbe\xef\x02\x00\x00\x00\x05")

    def test_torn_tail_on_empty_spool(self):
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        alice = self.dev(u["alice"])
        bob = self.dev(u["bob"])
        self.send(alice, bob, B, "e-1", "one", 1, 1)
        bob.disconnect()
        alice.disconnect()
        self.stack.stop_broker()
        self.assertEqual(self.spool_size(), 0)
        junk = b"\x00garbage that is no record at all\xff" * 3
        with open(self.spool_file, "ab") as f:
            f.write(junk)
        log0 = len(self.stack.broker_log)
        self.stack.start_broker()
        m = self.wait_log(r"torn tail of (\d+) bytes", log0)
        self.assertEqual(int(m.group(1)), len(junk))
        self.wait_log(r"chat: store: connected to postgres", log0)
        self.assertNotIn("spooled batches wait", self.stack.broker_log[log0:])
        self.assertEqual(self.spool_size(), 0, "the torn tail was not cut off")
        alice = self.dev(u["alice"])
        bob = self.dev(u["bob"])
        self.send(alice, bob, B, "e-2", "two", 2, 2)
        # and the spool still works: an outage after such a start
        self.stack.stop_postgres("fast")
        try:
            self.send(alice, bob, B, "e-3", "three", 3, 3, timeout=10)
        finally:
            self.stack.start_postgres()
        self.wait_log(r"chat: store: spool replayed", log0, 60)
        self.check_inbox(A, 3)
        self.check_inbox(B, 3)


if __name__ == "__main__":
    main()
