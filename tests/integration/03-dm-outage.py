#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 03-dm-outage: PostgreSQL goes away while messages flow. While it is
# unreachable the plugin writes each batch to its fsync'd spool and only
# then delivers and acknowledges; when it is back the spool is replayed in
# order and exactly once. So: every message acknowledged is in the table
# exactly once (both rows), every user's seq stays gap-free and in order,
# a message that was not acknowledged got an error (never silence), and the
# broker log shows the replay. Runs on a private cluster (own_pg).

import os
import re
import secrets
import threading
import time

from chatstack import SLOW, StackTestCase, main, tail

TOTAL = 1000


class DMOutageTest(StackTestCase):
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

    def dev(self, u, device=None):
        return self.stack.client(u[0], u[1], device=device)

    def wait_log(self, pattern, start, timeout=30):
        """Wait until the broker log (from offset start) matches pattern."""
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

    def wait_replayed(self, start):
        self.wait_log(r"chat: store: spool replayed", start, 60)

    def spool_size(self):
        p = os.path.join(self.stack.spool_dir, "chat.spool")
        return os.path.getsize(p) if os.path.exists(p) else 0

    def check_inbox(self, user, expect_n):
        """Rows of user: seq 1..n, gap-free; n == inbox_counters.last_seq."""
        seqs = [r[0] for r in self.stack.sql(
            "SELECT seq FROM messages WHERE user_id = %s ORDER BY seq", (user,))]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)), "%s: seq has gaps or repeats" % user)
        self.assertEqual(len(seqs), expect_n, "%s: rows" % user)
        last = self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s", (user,))
        self.assertEqual(last, [(expect_n,)], "%s: inbox_counters" % user)

    def collect_answers(self, dev, cids, timeout):
        """cid -> ack (msg event) or error event, for every cid; fails when
        one of them gets no answer at all."""
        answers = {}
        deadline = time.monotonic() + timeout * SLOW
        want = set(cids)
        while want - set(answers):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(want - set(answers))
                self.fail("%d sends got neither an acknowledgement nor an error, e.g. %s" % (
                    len(missing), missing[:10]))
            m = dev.wait_for(lambda m: m.topic == "chat/inbox/%s" % dev.user, left,
                             what="acknowledgements")
            ev = m.json
            cid = ev.get("cid")
            if cid in want:
                self.assertNotIn(cid, answers, "two answers for %s: %r and %r" % (
                    cid, answers.get(cid), ev))
                answers[cid] = ev
        return answers

    def test_outage_during_stream(self):
        """1,000 messages; PostgreSQL is stopped after ~250 and started
        again ~2 s later, while the stream goes on."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"], "phone")
        alice = self.dev(u["alice"], "phone")
        log0 = len(self.stack.broker_log)
        cids = ["o-%04d" % k for k in range(TOTAL)]
        sent = [0]
        errors = []

        def stream():
            try:
                for k, cid in enumerate(cids):
                    alice.publish("chat/dm/%s" % B, {"cid": cid, "body": "m%d" % k}, timeout=30)
                    sent[0] = k + 1
                    time.sleep(0.004)
            except Exception as e:
                errors.append(e)

        th = threading.Thread(target=stream)
        th.start()
        deadline = time.monotonic() + 60 * SLOW
        while sent[0] < 250 and th.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertGreaterEqual(sent[0], 250, "the stream stalled before the outage")
        self.stack.stop_postgres("fast")
        at_stop = sent[0]
        time.sleep(2.0)
        at_start = sent[0]
        self.stack.start_postgres()
        th.join(180 * SLOW)
        self.assertFalse(th.is_alive(), "the stream did not finish")
        self.assertFalse(errors, errors)
        self.assertLess(at_stop, TOTAL - 100, "the outage came too late to matter")
        self.assertGreater(at_start - at_stop, 20,
                           "fewer than 20 messages were sent during the outage: sends blocked?")

        answers = self.collect_answers(alice, cids, 60)
        acked = [c for c in cids if answers[c]["type"] == "msg"]
        failed = [c for c in cids if answers[c]["type"] != "msg"]
        for c in failed:
            self.assertEqual(answers[c]["type"], "error", answers[c])
            self.assertEqual(answers[c]["code"], "unavailable",
                             "the only acceptable refusal here: %r" % answers[c])
        self.wait_log(r"chat: store: postgres is back, replaying (\d+) spooled batches", log0, 60)
        self.wait_replayed(log0)

        # a client retries what was refused, with the same cid
        for c in failed:
            alice.publish("chat/dm/%s" % B, {"cid": c, "body": "m%d" % cids.index(c)})
        if failed:
            retried = self.collect_answers(alice, failed, 30)
            for c, ev in retried.items():
                self.assertEqual(ev["type"], "msg", "retry of %s after the outage: %r" % (c, ev))
                answers[c] = ev

        # every acknowledged message, and each retried one, exactly once
        acks = {c: answers[c] for c in cids}
        self.assertEqual(sorted(a["seq"] for a in acks.values()), list(range(1, TOTAL + 1)),
                         "alice's acknowledgements: seq 1..%d" % TOTAL)
        rows = self.stack.sql("SELECT cid, seq, id::text, body FROM messages WHERE user_id = %s",
                              (A,))
        self.assertEqual(len(rows), TOTAL, "alice's rows")
        byc = {r[0]: r[1:] for r in rows}
        for c, a in acks.items():
            self.assertEqual(byc.get(c), (a["seq"], a["id"], a["body"]),
                             "acknowledged %s is not stored as acknowledged" % c)
        self.check_inbox(A, TOTAL)

        # bob: one event per message, seq 1..1000 in order, as stored
        evs = []
        deadline = time.monotonic() + 60 * SLOW
        while len(evs) < TOTAL:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "bob got %d of %d messages" % (len(evs), TOTAL))
            evs.append(bob.wait_event("msg", timeout=left))
        bob.expect_none(1.0, what="more messages than were sent")
        self.assertEqual([e["seq"] for e in evs], list(range(1, TOTAL + 1)))
        self.assertEqual(sorted(e["id"] for e in evs), sorted(a["id"] for a in acks.values()))
        brows = self.stack.sql("SELECT seq, id::text FROM messages WHERE user_id = %s ORDER BY seq",
                               (B,))
        self.assertEqual(brows, [(e["seq"], e["id"]) for e in evs])
        self.check_inbox(B, TOTAL)
        self.assertEqual(self.spool_size(), 0, "the spool is not empty after the replay")
        n = int(re.search(r"replaying (\d+) spooled batches", self.stack.broker_log[log0:]).group(1))
        self.assertGreater(n, 0)
        print("\noutage: %d sent before the stop, %d during; %d spooled batches replayed; "
              "%d refused (unavailable) and retried" % (at_stop, at_start - at_stop, n,
                                                        len(failed)))

    def test_delivered_while_postgres_is_down(self):
        """With PostgreSQL stopped, a message is spooled and then delivered
        and acknowledged at once, without waiting for the database."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        alice.publish("chat/dm/%s" % B, {"cid": "d-0", "body": "before"})
        self.assertEqual(alice.wait_event("msg", cid="d-0")["seq"], 1)
        bob.wait_event("msg")
        log0 = len(self.stack.broker_log)
        self.stack.stop_postgres("fast")
        try:
            for k in range(1, 4):
                alice.publish("chat/dm/%s" % B, {"cid": "d-%d" % k, "body": "during %d" % k})
                ev = alice.wait_event(None, topic="chat/inbox/%s" % A, timeout=10)
                self.assertEqual((ev.get("type"), ev.get("cid"), ev.get("seq")),
                                 ("msg", "d-%d" % k, k + 1), ev)
                self.assertEqual(bob.wait_event("msg", timeout=10)["seq"], k + 1)
            self.assertGreater(self.spool_size(), 0, "acknowledged while down, but not spooled")
            # a repeated cid is still recognised from the writer's memory
            alice.publish("chat/dm/%s" % B, {"cid": "d-2", "body": "again"})
            self.assertEqual(alice.wait_event("msg", cid="d-2")["seq"], 3)
            bob.expect_none(1.0)
        finally:
            self.stack.start_postgres()
        self.wait_replayed(log0)
        self.check_inbox(A, 4)
        self.check_inbox(B, 4)
        self.assertEqual(self.spool_size(), 0)
        alice.publish("chat/dm/%s" % B, {"cid": "d-9", "body": "after"})
        self.assertEqual(alice.wait_event("msg", cid="d-9")["seq"], 5)
        self.assertEqual(bob.wait_event("msg", body="after")["seq"], 5)

    def test_old_cid_retried_while_postgres_is_down(self):
        """A client resends a message stored before a broker restart (it
        never saw the acknowledgement) while PostgreSQL is down. The writer
        cannot look the cid up; it may refuse (unavailable) but must not
        deliver a second copy, and after the replay every seq is gap-free."""
        u = self.users("alice", "bob")
        A, B = u["alice"][0], u["bob"][0]
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        alice.publish("chat/dm/%s" % B, {"cid": "old-1", "body": "original"})
        first = alice.wait_event("msg", cid="old-1")
        bob.wait_event("msg")
        bob.disconnect()
        alice.disconnect()
        self.stack.stop_broker()
        self.stack.start_broker()
        bob = self.dev(u["bob"])
        alice = self.dev(u["alice"])
        # the restarted writer is connected (and has its counters)
        alice.publish("chat/dm/%s" % B, {"cid": "warm-1", "body": "warm"})
        self.assertEqual(alice.wait_event("msg", cid="warm-1")["seq"], 2)
        self.assertEqual(bob.wait_event("msg", body="warm")["seq"], 2)
        log0 = len(self.stack.broker_log)
        self.stack.stop_postgres("fast")
        try:
            alice.publish("chat/dm/%s" % B, {"cid": "old-1", "body": "retry"})
            ev = alice.wait_event(None, topic="chat/inbox/%s" % A, timeout=10)
            if ev.get("type") == "msg":
                self.assertEqual(ev, first, "a repeated cid must give back the stored copy")
            else:
                self.assertEqual((ev.get("type"), ev.get("code")), ("error", "unavailable"), ev)
            bob.expect_none(1.5, what="a second copy of an already stored message")
        finally:
            self.stack.start_postgres()
        alice.publish("chat/dm/%s" % B, {"cid": "after-1", "body": "after"})
        alice.wait_event("msg", cid="after-1", timeout=15)
        if "spooled batches" in self.stack.broker_log[log0:]:
            self.wait_replayed(log0)
        self.check_inbox(A, self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s",
                                           (A,))[0][0])
        self.check_inbox(B, self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s",
                                           (B,))[0][0])
        self.assertEqual(self.stack.sql("SELECT count(*) FROM messages WHERE user_id = %s AND "
                                        "body IN ('original', 'retry')", (B,)), [(1,)])


if __name__ == "__main__":
    main()
