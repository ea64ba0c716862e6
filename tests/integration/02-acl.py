#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
# 02-acl: who may publish and subscribe where. Inboxes are readable only by
# their owner; only the server publishes to inbox and presence topics;
# anonymous clients stay out of the chat prefix; ordinary topics outside
# the prefix behave as in plain Mosquitto (or are refused with
# plugin_opt_outside_prefix deny); wildcard subscriptions are accepted but
# never yield what the rules forbid. Every "nothing arrives" check has a
# positive control on the same clients, so a test fails when delivery is
# broken as well as when it leaks.

import json
import secrets

from chatstack import MQTTv311, MQTTv5, StackTestCase, main

PROTOCOLS = (MQTTv311, MQTTv5)
PNAME = {MQTTv311: "MQTT 3.1.1", MQTTv5: "MQTT 5"}
QUIET_S = 1.5  # how long "nothing arrives" is watched

USERS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3"}


def marker():
    return "m-" + secrets.token_hex(6)


def contains(text):
    return lambda m: text.encode() in m.payload


def refused(code):
    return code >= 0x80


class AclTest(StackTestCase):
    stack_users = USERS
    # presence appears quickly, so the wildcard test does not wait 3 s
    stack_options = {"presence_debounce_ms": 200}

    def user(self, name, device=None, **kw):
        return self.stack.client(name, USERS[name], device=device, **kw)

    def anon(self, **kw):
        return self.stack.client(None, None, **kw)

    # -- subscriptions
    def test_inbox_subscription_only_own(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                a = self.user("alice", device="subs", protocol=proto, subscribe_inbox=False)
                own = a.subscribe("chat/inbox/alice")
                self.assertFalse(refused(own[0]), "alice refused her own inbox: %r" % own)
                for topic in ("chat/inbox/bob", "chat/inbox/nobody", "chat/inbox/bob/x",
                              "chat/inbox/alice/x", "chat/inbox/"):
                    codes = a.subscribe(topic)
                    self.assertTrue(refused(codes[0]), "alice may subscribe to %s: %r" % (topic,
                                                                                         codes))
                a.disconnect()

    def test_send_topics_not_subscribable(self):
        a = self.user("alice", device="subs2", subscribe_inbox=False)
        for topic in ("chat/dm/alice", "chat/dm/bob", "chat/group/team", "chat/receipt/alice",
                      "chat/typing/alice", "chat/typing/group/team", "chat/whatever"):
            codes = a.subscribe(topic)
            self.assertTrue(refused(codes[0]), "alice may subscribe to %s: %r" % (topic, codes))
        a.disconnect()

    # -- only the server publishes inbox and presence
    def test_publish_to_inbox_not_delivered(self):
        bob = self.user("bob", device="victim")
        alice = self.user("alice", device="forger")
        mk = marker()
        fake = {"type": "msg", "id": "1", "seq": 1, "ts": 1, "from": "carol", "to": "bob",
                "body": mk}
        alice.publish("chat/inbox/bob", fake)
        alice.publish("chat/inbox/alice", fake)       # not even into her own
        bob.publish("chat/inbox/bob", fake)           # nor the owner himself
        anon = self.anon()
        anon.publish("chat/inbox/bob", fake)
        bob.expect_none(QUIET_S, contains(mk), "forged inbox event")
        alice.expect_none(0.1, contains(mk), "forged inbox event")
        # positive control: a real DM does reach bob's inbox
        alice.publish("chat/dm/bob", {"cid": "acl-ctl-1", "body": "real " + mk})
        ev = bob.wait_event("msg", body="real " + mk, topic="chat/inbox/bob")
        self.assertEqual(ev["from"], "alice")
        for c in (bob, alice, anon):
            c.disconnect()

    def test_publish_to_presence_not_delivered(self):
        bob = self.user("bob", device="pres", subscribe_inbox=False)
        for t in ("chat/presence/bob", "chat/presence/+"):
            codes = bob.subscribe(t)
            self.assertFalse(refused(codes[0]), "bob refused %s: %r" % (t, codes))
        mk = marker()
        fake = json.dumps({"user": "bob", "status": "offline", "ts": 1, "last_seen": None,
                           "x": mk})
        alice = self.user("alice", device="pres")
        alice.publish("chat/presence/bob", fake)
        alice.publish("chat/presence/alice", fake, retain=True)
        bob.publish("chat/presence/bob", fake, retain=True)
        anon = self.anon()
        anon.publish("chat/presence/bob", fake, retain=True)
        bob.expect_none(QUIET_S, contains(mk), "forged presence")
        # nor retained for later subscribers
        late = self.user("bob", device="late", subscribe_inbox=False)
        late.subscribe("chat/presence/bob")
        late2 = self.user("alice", device="late", subscribe_inbox=False)
        late2.subscribe("chat/presence/alice")
        late.expect_none(QUIET_S, contains(mk), "forged retained presence")
        late2.expect_none(0.1, contains(mk), "forged retained presence")
        for c in (bob, alice, anon, late, late2):
            c.disconnect()

    # -- anonymous clients
    def test_anonymous_kept_out_of_prefix(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                anon = self.anon(protocol=proto)
                for topic in ("chat/inbox/bob", "chat/presence/bob", "chat/#", "chat/+/bob",
                              "chat/dm/bob"):
                    codes = anon.subscribe(topic)
                    self.assertTrue(refused(codes[0]), "anonymous may subscribe to %s: %r" % (
                        topic, codes))
                anon.disconnect()
        # publishing under the prefix delivers nothing and stores nothing
        bob = self.user("bob", device="anonchk")
        anon = self.anon()
        mk = marker()
        anon.publish("chat/dm/bob", {"cid": "x1", "body": mk})
        anon.publish("chat/dm/bob", mk)
        bob.expect_none(QUIET_S, contains(mk), "message from an anonymous client")
        rows = self.stack.sql("SELECT count(*) FROM messages WHERE body LIKE %s", ("%" + mk + "%",))
        self.assertEqual(rows[0][0], 0, "an anonymous send was stored")
        # an anonymous catch-all subscription never sees chat traffic
        spy = self.anon(client_id="spy-all")
        codes = spy.subscribe("#")
        alice = self.user("alice", device="anonchk")
        mk2 = marker()
        alice.publish("chat/dm/bob", {"cid": "anon-ctl-" + mk2, "body": mk2})
        bob.wait_event("msg", body=mk2)       # positive control
        if not refused(codes[0]):
            spy.expect_none(QUIET_S, lambda m: m.topic.startswith("chat/"), "chat traffic on '#'")
        for c in (bob, anon, spy, alice):
            c.disconnect()

    # -- outside the prefix
    def test_outside_prefix_works(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                alice = self.user("alice", device="out", protocol=proto)
                bob = self.user("bob", device="out", protocol=proto)
                anon = self.anon(protocol=proto)
                mk = marker()
                room = "rooms/%s/talk" % mk
                for c in (alice, anon):
                    codes = c.subscribe(room)
                    self.assertFalse(refused(codes[0]), "%s refused %s: %r" % (c.name, room, codes))
                bob.publish(room, "from bob " + mk)
                alice.wait_for(lambda m: m.topic == room and m.text == "from bob " + mk)
                anon.wait_for(lambda m: m.topic == room and m.text == "from bob " + mk)
                anon.publish(room, "from anon " + mk)
                alice.wait_for(lambda m: m.topic == room and m.text == "from anon " + mk)
                # retained, picked up by a later subscriber (user and anonymous)
                status = "status/%s" % mk
                bob.publish(status, "here " + mk, retain=True)
                late = self.anon(protocol=proto)
                late.subscribe(status)
                m = late.wait_for(lambda m: m.topic == status)
                self.assertTrue(m.retain)
                self.assertEqual(m.text, "here " + mk)
                late_u = self.user("carol", device="late", protocol=proto)
                late_u.subscribe("status/#")
                late_u.wait_for(lambda m: m.topic == status and m.retain)
                for c in (alice, bob, anon, late, late_u):
                    c.disconnect()

    # -- wildcards
    def test_wildcards_yield_only_allowed(self):
        # fresh users, so no conversation from another test is shared:
        # wanda watches; xavi writes to yara; yara writes to wanda.
        pw = {"wanda": "wanda-pw", "xavi": "xavi-pw", "yara": "yara-pw"}
        for name, p in pw.items():
            self.stack.add_user(name, p)
        wanda = self.stack.client("wanda", pw["wanda"], device="wild", subscribe_inbox=False)
        for t in ("chat/inbox/#", "chat/presence/+", "chat/inbox/+"):
            codes = wanda.subscribe(t)
            self.assertFalse(refused(codes[0]), "wanda refused %s: %r" % (t, codes))
        xavi = self.stack.client("xavi", pw["xavi"], device="wild")
        yara = self.stack.client("yara", pw["yara"], device="wild")
        mk1, mk2 = marker(), marker()
        # xavi -> yara: yara and xavi's own inbox get it, wanda must not
        xavi.publish("chat/dm/yara", {"cid": "wild-" + mk1, "body": mk1})
        yara.wait_event("msg", body=mk1, topic="chat/inbox/yara")
        xavi.wait_event("msg", body=mk1, topic="chat/inbox/xavi")
        # yara -> wanda: wanda's own traffic does arrive through the wildcards
        yara.publish("chat/dm/wanda", {"cid": "wild-" + mk2, "body": mk2})
        wanda.wait_event("msg", body=mk2, topic="chat/inbox/wanda")
        wanda.expect_none(QUIET_S, lambda m: m.topic.startswith("chat/inbox/")
                          and m.topic != "chat/inbox/wanda", "another user's inbox via a wildcard")
        wanda.expect_none(0.1, contains(mk1), "the xavi->yara message")
        # presence (debounce 200 ms): xavi and yara are online. wanda shares
        # a conversation with yara, none with xavi.
        wanda.expect_none(0.5, lambda m: m.topic == "chat/presence/xavi",
                          "presence of a user wanda shares nothing with")
        # late wildcard subscribers get the retained presence they may see
        # (positive controls) and not the rest
        late_x = self.stack.client("xavi", pw["xavi"], device="late", subscribe_inbox=False)
        late_x.subscribe("chat/presence/+")
        late_x.wait_for(lambda m: m.topic == "chat/presence/yara", timeout=5)
        late_w = self.stack.client("wanda", pw["wanda"], device="late", subscribe_inbox=False)
        late_w.subscribe("chat/presence/+")
        late_w.wait_for(lambda m: m.topic == "chat/presence/yara", timeout=5)
        late_w.expect_none(QUIET_S, lambda m: m.topic == "chat/presence/xavi",
                           "retained presence of a user wanda shares nothing with")
        for c in (wanda, xavi, yara, late_x, late_w):
            c.disconnect()


class OutsideDenyTest(StackTestCase):
    stack_users = USERS
    stack_options = {"outside_prefix": "deny"}

    def test_outside_topics_refused_for_users(self):
        for proto in PROTOCOLS:
            with self.subTest(protocol=PNAME[proto]):
                alice = self.stack.client("alice", USERS["alice"], device="deny", protocol=proto)
                for topic in ("rooms/1", "status/#", "#", "+/x"):
                    codes = alice.subscribe(topic)
                    if topic in ("#", "+/x"):
                        # these also cover chat topics: accepted or not,
                        # they may only ever yield chat traffic (below)
                        continue
                    self.assertTrue(refused(codes[0]), "alice may subscribe to %s under deny: %r"
                                    % (topic, codes))
                # what alice publishes outside the prefix reaches nobody
                watcher = self.stack.client(None, None, protocol=proto)
                wcodes = watcher.subscribe("rooms/#")
                mk = marker()
                alice.publish("rooms/1", mk)
                if not refused(wcodes[0]):
                    watcher.expect_none(QUIET_S, contains(mk), "a user's publish outside the prefix")
                alice.expect_none(0.1, contains(mk), "a user's publish outside the prefix")
                # chat itself still works
                bob = self.stack.client("bob", USERS["bob"], device="deny", protocol=proto)
                alice.publish("chat/dm/bob", {"cid": "deny-" + mk, "body": mk})
                bob.wait_event("msg", body=mk)
                for c in (alice, watcher, bob):
                    c.disconnect()


if __name__ == "__main__":
    main()
