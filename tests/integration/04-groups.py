#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""04-groups: group messages and group events.

Covered: `chatctl group create|add|remove|del` take effect in the running
broker within a second (a send works / is refused with not_member) and
produce `group` inbox events (created to the owner with user = owner and
by = null; added to the added user and every member; removed to the removed
user and the remaining members), stored with the members' own seq; a send
to chat/group/{gid} reaches every member (the sender's copy with its cid)
as a msg event with "group" (no "to"), one gseq for all copies (1, 2, 3 ...
gap-free per group) and each member's own seq; the body is stored once
(group_messages) with one messages row per member; non-members, unknown
and malformed group ids get not_member on the sending device only; removed
members stop receiving at once and new members do not receive earlier
messages; a member that has its 'added' event gets the next message, a
removed one gets nothing once the 'removed' event is out; a stream of 200
messages while a member is removed and another added reaches exactly the
members of the moment, gseq gap-free, and every inbox shows the change at
that point of the stream; a group of 1,000 members made with chatctl (all
500,500 'added' events stored, every inbox row of a message checked in the
database, 50 members connected and timed).
"""

import json
import os
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chatstack import MQTTv5, SLOW, StackTestCase, main  # noqa: E402

FAST = ["--iterations", "1000"]  # PBKDF2 cost for the many users made here (the minimum)
EFFECT_S = 1.0  # a chatctl change takes effect in the running broker within a second
GROUP_EVENT_KEYS = {"type", "seq", "ts", "group", "event", "user", "by"}
GMSG_KEYS = {"type", "id", "seq", "ts", "from", "group", "gseq", "body"}


def report(what, value):
    sys.stderr.write("\n  [timing] %s: %s\n" % (what, value))
    sys.stderr.flush()


def inbox_events(client, user):
    """Every JSON event received on user's inbox, in arrival order."""
    out = []
    for m in client.received:
        if m.topic == "chat/inbox/" + user and isinstance(m.json, dict):
            out.append(m.json)
    return out


def stored(events):
    return [e for e in events if "seq" in e]


class GroupCase(StackTestCase):
    stack_options = {"presence_debounce_ms": 300}
    maxDiff = None
    stack_users = {"admin0": "admin0-pw"}

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

    # -- helpers
    def users(self, n, prefix, workers=1):
        """n fresh users (name -> password), all accepted by the broker."""
        tag = secrets.token_hex(2)
        names = ["%s%s-%d" % (prefix, tag, i) for i in range(n)]
        pws = {u: "pw-%s" % u for u in names}

        def add(u):
            self.stack.chatctl(*FAST, "user", "add", u, input=pws[u] + "\n")

        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                list(ex.map(add, names))
        else:
            for u in names:
                add(u)
        self.stack.wait_user(names[-1], pws[names[-1]])
        self.stack.wait_user(names[0], pws[names[0]])
        return names, pws

    def client(self, user, pw, **kw):
        c = self.stack.client(user, pw, **kw)
        self._mine.append(c)
        return c

    def gid(self, prefix="g"):
        return "%s-%s" % (prefix, secrets.token_hex(4))

    def ctl(self, *args):
        self.stack.chatctl("group", *args)
        return time.monotonic()

    def send(self, c, gid, cid, body, meta=None):
        p = {"cid": cid, "body": body}
        if meta is not None:
            p["meta"] = meta
        c.publish("chat/group/" + gid, p)

    def wait_msg(self, c, gid, timeout=5, **fields):
        return c.wait_event("msg", timeout=timeout, group=gid, **fields)

    def wait_gevent(self, c, gid, event, user, timeout=5):
        return c.wait_event("group", timeout=timeout, group=gid, event=event, user=user)

    def assertGroupEvent(self, ev, gid, event, user):
        self.assertEqual(set(ev), GROUP_EVENT_KEYS, "group event keys: %r" % ev)
        self.assertEqual((ev["type"], ev["group"], ev["event"], ev["user"]), ("group", gid, event, user))
        self.assertIsNone(ev["by"], "by is null for an administrator's chatctl: %r" % ev)
        self.assertIsInstance(ev["seq"], int)
        self.assertIsInstance(ev["ts"], int)
        self.assertLess(abs(ev["ts"] - time.time() * 1000), 120000)

    def try_send(self, c, gid, timeout=3):
        """One send with a fresh cid: "ok" (stored, acknowledged), or the
        error code; plus when it was published."""
        cid = "probe-" + secrets.token_hex(4)
        t = time.monotonic()
        self.send(c, gid, cid, "probe")
        m = c.wait_for(lambda m: isinstance(m.json, dict) and m.json.get("cid") == cid
                       and m.json.get("type") in ("msg", "error"), timeout=timeout,
                       what="answer to probe %s" % cid)
        j = m.json
        return ("ok" if j["type"] == "msg" else j["code"]), t

    def until(self, c, gid, want, t0, limit=EFFECT_S):
        """Probe until try_send answers want; returns the delay after t0 of
        the first probe so answered. Fails after limit (scaled) + 3 s."""
        deadline = t0 + limit * SLOW + 3
        while True:
            got, t = self.try_send(c, gid)
            if got == want:
                return t - t0
            if time.monotonic() > deadline:
                self.fail("send to %s still %r (want %r) %.1fs after the change" % (
                    gid, got, want, time.monotonic() - t0))
            time.sleep(0.05)

    def assertSeqGapFree(self, user, events):
        seqs = [e["seq"] for e in stored(events)]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))) if seqs else [],
                         "%s: inbox seq must be gap-free and in order: %r" % (user, seqs))
        db = [r[0] for r in self.stack.sql(
            "SELECT seq FROM messages WHERE user_id = %s ORDER BY seq", (user,))]
        self.assertEqual(db, list(range(1, len(db) + 1)), "%s: stored seq gap-free" % user)
        cnt = self.stack.sql("SELECT last_seq FROM inbox_counters WHERE user_id = %s", (user,))
        self.assertEqual(cnt[0][0], len(db), "%s: inbox_counters.last_seq" % user)


class GroupTest(GroupCase):

    def test_chatctl_lifecycle_events_and_effect(self):
        (alice, bob, carol), pw = self.users(3, "lc")
        a = self.client(alice, pw[alice])
        b = self.client(bob, pw[bob])
        c = self.client(carol, pw[carol])
        gid = self.gid()
        self.assertEqual(self.try_send(a, gid)[0], "not_member", "no such group yet")

        # each change: probe sends at once (the change must take effect within
        # a second of chatctl's return), then check the events
        t0 = self.ctl("create", gid, "--owner", alice)
        dt = self.until(a, gid, "ok", t0)
        report("group create -> owner's send accepted", "%.3f s" % dt)
        self.assertLessEqual(dt, EFFECT_S * SLOW)
        ev = self.wait_gevent(a, gid, "created", alice)
        self.assertGroupEvent(ev, gid, "created", alice)
        self.assertEqual(self.try_send(b, gid)[0], "not_member")
        b.expect_none(0.3, pred=lambda m: m.json and m.json.get("type") == "group",
                      what="a group event for a non-member")

        t0 = self.ctl("add", gid, bob)
        dt = self.until(b, gid, "ok", t0)
        report("group add -> new member's send accepted", "%.3f s" % dt)
        self.assertLessEqual(dt, EFFECT_S * SLOW)
        for who, cl in ((bob, b), (alice, a)):
            ev = self.wait_gevent(cl, gid, "added", bob)
            self.assertGroupEvent(ev, gid, "added", bob)

        t0 = self.ctl("add", gid, carol)
        self.until(c, gid, "ok", t0)
        for cl in (a, b, c):
            self.assertGroupEvent(self.wait_gevent(cl, gid, "added", carol), gid, "added", carol)

        t0 = self.ctl("remove", gid, bob)
        dt = self.until(b, gid, "not_member", t0)
        report("group remove -> removed member's send refused", "%.3f s" % dt)
        self.assertLessEqual(dt, EFFECT_S * SLOW)
        for cl in (b, a, c):
            self.assertGroupEvent(self.wait_gevent(cl, gid, "removed", bob), gid, "removed", bob)
        # bob no longer gets the group's messages or events
        b.drain()
        self.assertEqual(self.try_send(a, gid)[0], "ok")
        b.expect_none(0.5, pred=lambda m: m.json and m.json.get("group") == gid,
                      what="group traffic for a removed member")

        t0 = self.ctl("del", gid)
        dt = self.until(a, gid, "not_member", t0)
        report("group del -> owner's send refused", "%.3f s" % dt)
        self.assertLessEqual(dt, EFFECT_S * SLOW)
        for who, cl in ((alice, a), (carol, c)):
            ev_a = self.wait_gevent(cl, gid, "removed", alice)
            ev_c = self.wait_gevent(cl, gid, "removed", carol)
            self.assertGroupEvent(ev_a, gid, "removed", alice)
            self.assertGroupEvent(ev_c, gid, "removed", carol)
        b.expect_none(0.3, pred=lambda m: m.json and m.json.get("group") == gid)

        # outbox drained exactly once; events stored with the members' seq
        time.sleep(0.3)
        self.assertEqual(self.stack.sql("SELECT count(*) FROM group_outbox")[0][0], 0)
        for u, cl in ((alice, a), (bob, b), (carol, c)):
            evs = inbox_events(cl, u)
            self.assertSeqGapFree(u, evs)
            got = [(e["event"], e["user"]) for e in evs if e.get("type") == "group"]
            rows = self.stack.sql(
                "SELECT seq, gevent, guser, gby, group_id, ts FROM messages "
                "WHERE user_id = %s AND kind = 'group' ORDER BY seq", (u,))
            self.assertEqual([(r[1], r[2]) for r in rows], got, "%s: stored group events" % u)
            self.assertTrue(all(r[3] is None and r[4] == gid for r in rows))
            by_seq = {e["seq"]: e for e in evs if e.get("type") == "group"}
            for r in rows:
                self.assertEqual(by_seq[r[0]]["ts"], r[5])
        # exact order up to the del, whose per-member events come in any order
        want = {
            alice: ([("created", alice), ("added", bob), ("added", carol), ("removed", bob)],
                    [("removed", alice), ("removed", carol)]),
            bob: ([("added", bob), ("added", carol), ("removed", bob)], []),
            carol: ([("added", carol), ("removed", bob)], [("removed", alice), ("removed", carol)]),
        }
        for u, (head, tail) in want.items():
            rows = [tuple(r) for r in self.stack.sql(
                "SELECT gevent, guser FROM messages WHERE user_id = %s AND kind = 'group' "
                "ORDER BY seq", (u,))]
            self.assertEqual(rows[:len(head)], head, "%s: group events" % u)
            self.assertEqual(sorted(rows[len(head):]), sorted(tail), "%s: events of the del" % u)

    def test_fanout_gseq_and_storage(self):
        (alice, bob, carol), pw = self.users(3, "fo")
        gid = self.gid()
        cl = {u: self.client(u, pw[u]) for u in (alice, bob, carol)}
        cl_b2 = self.client(bob, pw[bob], device="second", protocol=MQTTv5)
        self.ctl("create", gid, "--owner", alice)
        self.ctl("add", gid, bob)
        self.ctl("add", gid, carol)
        for u in (alice, bob, carol):
            self.wait_gevent(cl[u], gid, "added", carol)
        self.until(cl[alice], gid, "ok", time.monotonic())
        first_gseq = self.stack.sql("SELECT last_gseq FROM groups WHERE id = %s", (gid,))[0][0] + 1
        for u in cl:
            cl[u].drain()
        cl_b2.drain()

        sends = [(alice, "m1", "hello group", None), (alice, "m2", "second", {"k": [1, "x"]}),
                 (alice, "m3", "third \u00e9\u6f22", None), (bob, "m4", "from bob", None)]
        ids = []
        for n, (sender, cid, body, meta) in enumerate(sends):
            self.send(cl[sender], gid, cid, body, meta)
            copies = {}
            for u in (alice, bob, carol):
                ev = self.wait_msg(cl[u], gid, body=body)
                copies[u] = ev
                want_keys = set(GMSG_KEYS) | ({"cid"} if u == sender else set()) \
                    | ({"meta"} if meta is not None else set())
                self.assertEqual(set(ev), want_keys, "%s's copy: %r" % (u, ev))
                self.assertNotIn("to", ev)
                self.assertEqual(ev["from"], sender)
                self.assertEqual(ev["group"], gid)
                if u == sender:
                    self.assertEqual(ev["cid"], cid, "the sender's copy carries its cid")
                if meta is not None:
                    self.assertEqual(ev["meta"], meta, "meta is returned as is")
            ev2 = self.wait_msg(cl_b2, gid, body=body)  # bob's other device: same event
            self.assertEqual(ev2, copies[bob])
            self.assertEqual(len({e["id"] for e in copies.values()}), 1, "one id for all copies")
            self.assertEqual(len({e["ts"] for e in copies.values()}), 1)
            self.assertEqual({e["gseq"] for e in copies.values()}, {first_gseq + n},
                             "every copy carries the same gseq, 1, 2, 3 ... per group")
            ids.append(copies[alice]["id"])
        for u in (alice, bob, carol):
            cl[u].expect_none(0.3, pred=lambda m: m.json and m.json.get("type") == "msg",
                              what="an extra copy")
            self.assertSeqGapFree(u, inbox_events(cl[u], u))

        # stored once: group_messages holds the bodies, messages one row per member
        gm = self.stack.sql("SELECT gseq, id::text, from_user, body, meta FROM group_messages "
                            "WHERE group_id = %s ORDER BY gseq", (gid,))
        gm = [r for r in gm if r[0] >= first_gseq]
        self.assertEqual([r[0] for r in gm], list(range(first_gseq, first_gseq + 4)))
        self.assertEqual([r[1] for r in gm], ids)
        self.assertEqual([r[3] for r in gm], [s[2] for s in sends])
        self.assertEqual(json.loads(gm[1][4]), {"k": [1, "x"]})
        rows = self.stack.sql("SELECT user_id, id::text, gseq, body, meta, cid, to_user FROM messages "
                              "WHERE group_id = %s AND kind = 'msg' AND gseq >= %s",
                              (gid, first_gseq))
        self.assertEqual(len(rows), 12, "one messages row per member and message")
        for r in rows:
            self.assertIsNone(r[3], "the body lives in group_messages only")
            self.assertIsNone(r[4])
            self.assertIsNone(r[6])
        cids = sorted((r[0], r[5]) for r in rows if r[5] is not None)
        self.assertEqual(cids, sorted([(alice, "m1"), (alice, "m2"), (alice, "m3"), (bob, "m4")]))
        per_id = {}
        for r in rows:
            per_id.setdefault(r[1], set()).add(r[0])
        self.assertEqual(per_id, {i: {alice, bob, carol} for i in ids})

        # a retransmitted cid is not stored again: only the sender gets the copy
        for u in cl:
            cl[u].drain()
        self.send(cl[alice], gid, "m1", "changed body")
        again = self.wait_msg(cl[alice], gid, cid="m1")
        self.assertEqual((again["id"], again["body"]), (ids[0], "hello group"))
        for u in (bob, carol):
            cl[u].expect_none(0.5, pred=lambda m: m.json and m.json.get("group") == gid)
        self.assertEqual(self.stack.sql("SELECT count(*) FROM group_messages WHERE group_id = %s",
                                        (gid,))[0][0], first_gseq - 1 + len(gm))

    def test_not_member_errors(self):
        (alice, bob, dave), pw = self.users(3, "nm")
        gid = self.gid()
        a = self.client(alice, pw[alice])
        b = self.client(bob, pw[bob])
        self.ctl("create", gid, "--owner", alice)
        self.ctl("add", gid, bob)
        self.wait_gevent(b, gid, "added", bob)
        d1 = self.client(dave, pw[dave], device="one")
        d2 = self.client(dave, pw[dave], device="two")
        d5 = self.client(dave, pw[dave], device="five", protocol=MQTTv5)
        self.until(a, gid, "ok", time.monotonic())
        # the probe's copy for bob travels on another socket: let it land
        b.wait_for(lambda m: isinstance(m.json, dict) and m.json.get("body") == "probe", timeout=5,
                   what="bob's copy of the probe")
        a.drain()
        b.drain()
        cases = [
            ("non-member", "chat/group/" + gid),
            ("unknown group", "chat/group/nosuch-" + secrets.token_hex(3)),
            ("space in gid", "chat/group/bad gid"),
            ("65 characters", "chat/group/" + "g" * 65),
            ("non-ASCII gid", "chat/group/caf\u00e9"),
            ("extra level", "chat/group/%s/x" % gid),
            ("empty gid", "chat/group/"),
            ("no gid level", "chat/group"),
        ]
        for n, (what, topic) in enumerate(cases):
            for dev in (d1, d5):
                with self.subTest(what=what, device=dev.client_id):
                    cid = "nm-%d-%s" % (n, dev.client_id[-4:])
                    dev.publish(topic, {"cid": cid, "body": "let me in"})  # PUBACK: never refused
                    ev = dev.wait_event("error", cid=cid)
                    self.assertEqual(ev["code"], "not_member", "%s: %r" % (what, ev))
                    self.assertEqual(set(ev), {"type", "cid", "code", "reason"})
                    self.assertTrue(ev["reason"])
        # without a readable cid the error has none
        d1.publish("chat/group/" + gid, "plain text")
        ev = d1.wait_event("error", code="not_member")
        self.assertNotIn("cid", ev)
        # the error goes to the sending device only; members see nothing
        d2.expect_none(0.5, what="an error for another device of the sender")
        for c in (a, b):
            c.expect_none(0.1, pred=lambda m: m.json and m.json.get("type") == "msg")
        self.assertEqual(self.stack.sql("SELECT count(*) FROM messages WHERE user_id = %s", (dave,))[0][0],
                         0, "nothing stored for refused sends")
        self.assertEqual(self.stack.sql("SELECT count(*) FROM group_messages WHERE from_user = %s",
                                        (dave,))[0][0], 0)

    def test_removed_stop_and_new_do_not_see_history(self):
        (alice, bob, carol, dave), pw = self.users(4, "rm")
        gid = self.gid()
        cl = {u: self.client(u, pw[u]) for u in (alice, bob, carol, dave)}
        self.ctl("create", gid, "--owner", alice)
        self.ctl("add", gid, bob)
        self.ctl("add", gid, carol)
        self.wait_gevent(cl[carol], gid, "added", carol)
        self.until(cl[carol], gid, "ok", time.monotonic())
        self.send(cl[alice], gid, "before", "before the change")
        for u in (alice, bob, carol):
            self.wait_msg(cl[u], gid, body="before the change")
        m1 = self.stack.sql("SELECT id FROM group_messages WHERE group_id = %s AND body = %s",
                            (gid, "before the change"))[0][0]

        self.ctl("remove", gid, carol)
        self.ctl("add", gid, dave)
        self.wait_gevent(cl[carol], gid, "removed", carol)
        self.wait_gevent(cl[dave], gid, "added", dave)
        for u in (alice, bob):
            self.wait_gevent(cl[u], gid, "removed", carol)
            self.wait_gevent(cl[u], gid, "added", dave)
        self.until(cl[dave], gid, "ok", time.monotonic())
        self.send(cl[bob], gid, "after", "after the change")
        for u in (alice, bob, dave):
            self.wait_msg(cl[u], gid, body="after the change")
        cl[carol].expect_none(0.8, pred=lambda m: m.json and m.json.get("type") == "msg"
                              and m.json.get("group") == gid, what="a message for a removed member")
        self.assertEqual(self.try_send(cl[carol], gid)[0], "not_member")
        bodies = [e.get("body") for e in inbox_events(cl[dave], dave) if e.get("type") == "msg"]
        self.assertNotIn("before the change", bodies, "a new member does not get earlier messages")
        m2 = self.stack.sql("SELECT id FROM group_messages WHERE group_id = %s AND body = %s",
                            (gid, "after the change"))[0][0]
        rows = self.stack.sql("SELECT user_id, id FROM messages WHERE group_id = %s AND kind = 'msg' "
                              "AND id IN (%s, %s)", (gid, m1, m2))
        got = {}
        for u, i in rows:
            got.setdefault(i, set()).add(u)
        self.assertEqual(got, {m1: {alice, bob, carol}, m2: {alice, bob, dave}})
        # and in each inbox, the change sits between the two messages
        for u in (alice, bob):
            kinds = [(e["type"], e.get("event"), e.get("body")) for e in
                     stored(inbox_events(cl[u], u)) if e.get("group") == gid]
            i_before = kinds.index(("msg", None, "before the change"))
            i_after = kinds.index(("msg", None, "after the change"))
            i_rm = kinds.index(("group", "removed", None))
            self.assertLess(i_before, i_rm)
            self.assertLess(i_rm, i_after)

    def test_group_event_means_membership_in_force(self):
        """A member that has its 'added' event gets the next message sent to
        the group; once the members have the 'removed' event, the removed
        user gets nothing more. Repeated, since a wrong order is a race."""
        (alice, bob), pw = self.users(2, "ev")
        a = self.client(alice, pw[alice])
        b = self.client(bob, pw[bob])
        problems = []
        rounds = 8
        for r in range(rounds):
            gid = self.gid("ev%d" % r)
            self.ctl("create", gid, "--owner", alice)
            self.wait_gevent(a, gid, "created", alice)
            self.until(a, gid, "ok", time.monotonic())
            self.ctl("add", gid, bob)
            self.wait_gevent(b, gid, "added", bob)
            self.wait_gevent(a, gid, "added", bob)
            self.send(a, gid, "after-add-%d" % r, "after add %d" % r)
            ack = self.wait_msg(a, gid, cid="after-add-%d" % r)
            try:
                self.wait_msg(b, gid, timeout=2, body="after add %d" % r)
            except AssertionError:
                rows = self.stack.sql("SELECT user_id FROM messages WHERE id = %s", (int(ack["id"]),))
                problems.append("round %d: bob had his 'added' event, alice then sent gseq %d, bob "
                                "did not get it (stored for %r)" % (r, ack["gseq"],
                                                                     sorted(x[0] for x in rows)))
            self.ctl("remove", gid, bob)
            self.wait_gevent(b, gid, "removed", bob)
            self.wait_gevent(a, gid, "removed", bob)
            self.send(a, gid, "after-rm-%d" % r, "after remove %d" % r)
            ack = self.wait_msg(a, gid, cid="after-rm-%d" % r)
            try:
                b.expect_none(0.5, pred=lambda m: m.json and m.json.get("group") == gid
                              and m.json.get("type") == "msg")
            except AssertionError:
                problems.append("round %d: alice had the 'removed bob' event, then sent gseq %d, "
                                "and bob still got it" % (r, ack["gseq"]))
            b.drain()
        self.assertEqual(problems, [], "group events ahead of the membership they announce "
                         "(%d of %d rounds)" % (len(problems), rounds))

    def stream_with_changes(self, N=200, gap=0.005):
        """alice streams N messages to a group of alice, bob and carol;
        after message 50 carol is removed, after message 100 erin is added
        (both with chatctl, while the stream goes on). Returns what every
        member's inbox got and when things happened."""
        (alice, bob, carol, erin), pw = self.users(4, "ms")
        gid = self.gid()
        cl = {u: self.client(u, pw[u]) for u in (alice, bob, carol, erin)}
        self.ctl("create", gid, "--owner", alice)
        self.ctl("add", gid, bob)
        self.ctl("add", gid, carol)
        self.wait_gevent(cl[carol], gid, "added", carol)
        self.until(cl[carol], gid, "ok", time.monotonic())
        base = self.stack.sql("SELECT last_gseq FROM groups WHERE id = %s", (gid,))[0][0]
        for c in cl.values():
            c.drain()

        acked = {}  # i -> monotonic time of its PUBACK (taken in by then)
        sent = {}
        progress = threading.Semaphore(0)
        err = []

        def stream():
            try:
                for i in range(1, N + 1):
                    sent[i] = time.monotonic()
                    self.send(cl[alice], gid, "s%03d" % i, "stream %03d" % i)
                    acked[i] = time.monotonic()
                    progress.release()
                    time.sleep(gap)
            except Exception as e:  # reported below
                err.append(e)
                progress.release()

        th = threading.Thread(target=stream, daemon=True)
        th.start()
        for _ in range(50):
            progress.acquire()
        t_rm0 = time.monotonic()
        t_rm1 = self.ctl("remove", gid, carol)
        for _ in range(50):
            progress.acquire()
        t_add0 = time.monotonic()
        t_add1 = self.ctl("add", gid, erin)
        th.join(60)
        self.assertFalse(th.is_alive())
        self.assertFalse(err, "the sender's stream failed: %r" % err)
        for i in range(1, N + 1):
            self.wait_msg(cl[alice], gid, timeout=10, cid="s%03d" % i)
        self.wait_gevent(cl[erin], gid, "added", erin)
        self.wait_gevent(cl[carol], gid, "removed", carol)
        time.sleep(1.0)
        st = {"alice": alice, "bob": bob, "carol": carol, "erin": erin, "gid": gid, "base": base,
              "N": N, "cl": cl, "acked": acked, "sent": sent, "t_rm0": t_rm0, "t_rm1": t_rm1,
              "t_add0": t_add0, "t_add1": t_add1, "order": {}, "gmsgs": {}}
        for u in (alice, bob, carol, erin):
            evs = stored(inbox_events(cl[u], u))
            st["gmsgs"][u] = [e for e in evs if e.get("type") == "msg" and e.get("group") == gid
                              and e["gseq"] > base]
            o = []
            for e in evs:
                if e.get("group") != gid:
                    continue
                if e["type"] == "msg":
                    o.append(("msg", e["gseq"]))
                elif e["type"] == "group":
                    o.append((e["event"], e["user"]))
            st["order"][u] = o
        return st

    def test_membership_change_mid_stream(self):
        """Each message reaches exactly the members of the moment it was
        taken in: a gap-free prefix for the removed member, a gap-free
        suffix for the new one, everything for the others; the database
        agrees with what was delivered."""
        st = self.stream_with_changes()
        alice, bob, carol, erin, gid, base, N = (st[k] for k in ("alice", "bob", "carol", "erin", "gid",
                                                               "base", "N"))
        a_msgs = st["gmsgs"][alice]
        self.assertEqual([e["gseq"] for e in a_msgs], list(range(base + 1, base + N + 1)),
                         "gseq is gap-free and in sending order")
        self.assertEqual([e["body"] for e in a_msgs], ["stream %03d" % i for i in range(1, N + 1)])
        gseq_of = {e["body"]: e["gseq"] for e in a_msgs}
        id_of = {e["gseq"]: e["id"] for e in a_msgs}
        num = {g: int(b.split()[1]) for b, g in gseq_of.items()}  # gseq -> i
        gm = self.stack.sql("SELECT gseq FROM group_messages WHERE group_id = %s AND gseq > %s "
                            "ORDER BY gseq", (gid, base))
        self.assertEqual([r[0] for r in gm], list(range(base + 1, base + N + 1)))

        b_msgs = st["gmsgs"][bob]
        self.assertEqual([e["gseq"] for e in b_msgs], [e["gseq"] for e in a_msgs],
                         "a member for the whole stream gets every message, in order")
        for e in b_msgs:
            self.assertEqual(e["id"], id_of[e["gseq"]])

        c_got = [e["gseq"] for e in st["gmsgs"][carol]]
        e_got = [e["gseq"] for e in st["gmsgs"][erin]]
        self.assertTrue(c_got, "carol was a member when the stream began")
        self.assertTrue(e_got, "erin is a member when the stream ends")
        k = c_got[-1]
        self.assertEqual(c_got, list(range(base + 1, k + 1)),
                         "a removed member gets a prefix of the stream, gap-free")
        j = e_got[0]
        self.assertEqual(e_got, list(range(j, base + N + 1)),
                         "an added member gets a suffix of the stream, gap-free")
        report("mid-stream change", "carol got i=1..%d (removed after i=50, chatctl took %.3f s); "
               "erin got i=%d..%d (added after i=100, chatctl took %.3f s)" % (
                   num[k], st["t_rm1"] - st["t_rm0"], num[j], N, st["t_add1"] - st["t_add0"]))
        # acknowledged before the change started -> delivered; sent a second
        # after chatctl returned -> not (and the reverse for erin)
        for i in range(1, N + 1):
            g = gseq_of["stream %03d" % i]
            if st["acked"][i] < st["t_rm0"]:
                self.assertIn(g, c_got, "message %d was taken in before carol's removal" % i)
            if st["sent"][i] > st["t_rm1"] + EFFECT_S * SLOW:
                self.assertNotIn(g, c_got, "message %d was sent a second after carol's removal" % i)
            if st["acked"][i] < st["t_add0"]:
                self.assertNotIn(g, e_got, "message %d was taken in before erin was added" % i)
            if st["sent"][i] > st["t_add1"] + EFFECT_S * SLOW:
                self.assertIn(g, e_got, "message %d was sent a second after erin was added" % i)

        rows = self.stack.sql("SELECT user_id, gseq FROM messages WHERE group_id = %s AND kind = 'msg' "
                              "AND gseq > %s", (gid, base))
        per = {}
        for u, g in rows:
            per.setdefault(u, []).append(g)
        for u, got in ((alice, [e["gseq"] for e in a_msgs]), (bob, [e["gseq"] for e in b_msgs]),
                       (carol, c_got), (erin, e_got)):
            self.assertEqual(sorted(per.get(u, [])), got, "%s: stored rows vs delivered" % u)
            self.assertSeqGapFree(u, inbox_events(st["cl"][u], u))

    def test_membership_events_in_stream_order(self):
        """A membership change is one point in the group's stream, and every
        inbox shows it there: the removed member gets no group message after
        its 'removed' event, the new member none before its 'added' event,
        and in the other members' inboxes the 'removed' event follows the
        last message the removed member got and the 'added' event precedes
        the first message the new member got."""
        st = self.stream_with_changes()
        alice, bob, carol, erin, base = (st[k] for k in ("alice", "bob", "carol", "erin", "base"))
        c_got = [e["gseq"] for e in st["gmsgs"][carol]]
        e_got = [e["gseq"] for e in st["gmsgs"][erin]]
        k, j = c_got[-1], e_got[0]
        problems = []
        for u in (carol, bob, alice):
            o = st["order"][u]
            pos = o.index(("removed", carol))
            before = [g for kind, g in o[:pos] if kind == "msg" and g > base]
            after = [g for kind, g in o[pos:] if kind == "msg"]
            if u == carol and after:
                problems.append("carol got group messages gseq %r after her 'removed' event" % after)
            if u != carol and (before[-1] if before else base) != k:
                problems.append("%s's inbox has 'removed carol' after gseq %s, but carol's last "
                                "message is gseq %d" % (u, before[-1] if before else None, k))
        for u in (erin, bob, alice):
            o = st["order"][u]
            pos = o.index(("added", erin))
            before = [g for kind, g in o[:pos] if kind == "msg" and g > base]
            if u == erin and before:
                problems.append("erin got group messages gseq %r before her 'added' event" % before)
            if u != erin and (before[-1] if before else base) != j - 1:
                problems.append("%s's inbox has 'added erin' after gseq %s, but erin's first "
                                "message is gseq %d" % (u, before[-1] if before else None, j))
        self.assertEqual(problems, [], "membership events out of place in the stream")


class BigGroupTest(GroupCase):
    """A group of 1,000 members: every inbox row checked in the database,
    50 members connected and timed (full delivery to 1,000 connected
    members is measured by bench/fanout)."""

    N = 1000
    SAMPLE = 50

    def test_group_of_1000(self):
        t0 = time.monotonic()
        names, pw = self.users(self.N, "big", workers=8)
        t_users = time.monotonic() - t0
        owner = names[0]
        gid = self.gid("big")
        self.ctl("create", gid, "--owner", owner)
        t1 = time.monotonic()

        def add(u):
            self.stack.chatctl("group", "add", gid, u)

        with ThreadPoolExecutor(4) as ex:
            list(ex.map(add, names[1:]))
        t_members = time.monotonic() - t1
        # every added event delivered into the inboxes (1 + 2 + ... + 999 of them)
        deadline = time.monotonic() + 120 * SLOW
        want_events = self.N * (self.N + 1) // 2 - 1 + 1  # created + sum of added fan-outs
        while True:
            n = self.stack.sql("SELECT count(*) FROM messages WHERE group_id = %s AND kind = 'group'",
                               (gid,))[0][0]
            if n >= want_events or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        t_events = time.monotonic() - t1
        report("1,000 members", "users %.1f s, chatctl group add x999 %.1f s, all %d group events "
               "stored after %.1f s" % (t_users, t_members, want_events, t_events))
        self.assertEqual(n, want_events, "added events: one per member at the time of each add")
        self.assertEqual(self.stack.sql("SELECT count(*) FROM group_outbox")[0][0], 0)

        sample = names[1:1 + self.SAMPLE]
        snd = self.client(owner, pw[owner])
        cls = {u: self.client(u, pw[u]) for u in sample}
        self.until(snd, gid, "ok", time.monotonic())
        for c in cls.values():
            c.drain()
        times = []
        for k in range(3):
            body = "to a thousand #%d" % k
            t = time.monotonic()
            self.send(snd, gid, "big-%d" % k, body)
            ack = self.wait_msg(snd, gid, timeout=10, cid="big-%d" % k)
            evs = {u: self.wait_msg(c, gid, timeout=10, body=body) for u, c in cls.items()}
            last = max(c.received[-1].time for c in cls.values())
            times.append(last - t)
            self.assertEqual({e["gseq"] for e in evs.values()}, {ack["gseq"]})
            self.assertEqual({e["id"] for e in evs.values()}, {ack["id"]})
            rows = self.stack.sql("SELECT count(*), count(DISTINCT user_id), "
                                  "count(*) FILTER (WHERE cid IS NOT NULL) FROM messages "
                                  "WHERE id = %s AND kind = 'msg'", (int(ack["id"]),))
            self.assertEqual(rows[0], (self.N, self.N, 1), "one inbox row per member, one cid")
            self.assertEqual(self.stack.sql("SELECT count(*) FROM group_messages WHERE id = %s",
                                            (int(ack["id"]),))[0][0], 1, "the body is stored once")
            # each member's row has its own next seq
            seqs = self.stack.sql(
                "SELECT count(*) FROM messages m JOIN inbox_counters c ON c.user_id = m.user_id "
                "WHERE m.id = %s AND m.seq = c.last_seq", (int(ack["id"]),))[0][0]
            self.assertEqual(seqs, self.N, "the message is every member's newest event")
            db_seq = dict(self.stack.sql("SELECT user_id, seq FROM messages WHERE id = %s",
                                         (int(ack["id"]),)))
            for u, e in evs.items():
                self.assertEqual(e["seq"], db_seq[u], "%s: the delivered seq is the stored one" % u)
        report("1,000-member group, send -> last of %d connected members" % self.SAMPLE,
               ", ".join("%.0f ms" % (x * 1000) for x in times))


if __name__ == "__main__":
    main()
