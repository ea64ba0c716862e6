#!/usr/bin/python3
# SPDX-License-Identifier: EPL-2.0
"""05-chatctl.py: the admin tool against a real PostgreSQL.

chatctl needs only the database, so these tests use chatstack's
PostgreSQL (the ctest fixture's shared cluster, or one started here) and a
fresh database per test class, and run build/chatctl directly: they choose
its environment themselves (with and without a token secret, the defaults
file, CHAT_DB, the PG* variables). Every run's stderr is checked for
sanitizer reports, so the ASan build also checks for leaks.

Covered: init (idempotent, schema_version), user add/passwd/del/list
(PBKDF2 hash format, verifier, no clear password stored), invalid,
duplicate and unknown ids, password input rules, group create/add/remove/
del/list with their group_outbox rows, token (a JWT for the user), usage
errors, settings resolution, and concurrent group changes.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chatstack  # noqa: E402

CHATCTL = os.path.join(chatstack.BUILD_DIR, "chatctl")
SCHEMA_DIR = os.path.join(chatstack.SOURCE_DIR, "schema")
FAST = ["--iterations", "1000"]  # PBKDF2 cost for most users here (the minimum)
HASH_RE = re.compile(r"^pbkdf2-sha512\$(\d+)\$([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*)$")
BAD_IDS = ["a b", "x/y", "a" * 65, "", "a+b", "#", "caf\u00e9", "a\nb"]


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def schema_files():
    return sorted(f for f in os.listdir(SCHEMA_DIR) if re.match(r"^\d.*\.sql$", f) and len(f) >= 8)


class ChatctlCase(unittest.TestCase):
    """A fresh database (schema applied) per class, a token secret, an
    empty defaults file, and a chatctl runner."""

    init_schema = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(CHATCTL):
            raise chatstack.HarnessError("%s is missing: build first" % CHATCTL)
        cls.pg = chatstack.shared_postgres()
        cls.dir = tempfile.mkdtemp(prefix="chatctl-test-")
        cls.dbs = []
        cls.dbname = cls.new_db()
        cls.secret_file = os.path.join(cls.dir, "token.secret")
        cls.secret = base64.b64encode(os.urandom(48))
        with open(cls.secret_file, "wb") as f:
            f.write(cls.secret + b"\n")
        cls.empty_conf = os.path.join(cls.dir, "empty.conf")
        open(cls.empty_conf, "w").close()
        if cls.init_schema:
            r = cls.run_ctl("init", check=True)
            assert "schema up to date" in r.stdout, r.stdout

    @classmethod
    def tearDownClass(cls):
        for db in cls.dbs:
            try:
                cls.pg.drop_database(db)
            except Exception as e:  # keep tearing down
                chatstack.log("drop %s: %s" % (db, e))
        if not chatstack.KEEP_TMP:
            shutil.rmtree(cls.dir, ignore_errors=True)
        super().tearDownClass()

    @classmethod
    def new_db(cls):
        name = "chatctl_%d_%s" % (os.getpid(), secrets.token_hex(4))
        cls.pg.create_database(name)
        cls.dbs.append(name)
        return name

    @classmethod
    def conninfo(cls, db=None):
        return cls.pg.conninfo(db or cls.dbname)

    @classmethod
    def run_ctl(cls, *args, input="", db=True, secret=False, env=None, check=False, dbname=None):
        """chatctl [--db ...] [--token-secret-file ...] args; CompletedProcess.
        The defaults file is an empty one unless env says otherwise."""
        argv = [CHATCTL]
        if db:
            argv += ["--db", cls.conninfo(dbname)]
        if secret:
            argv += ["--token-secret-file", cls.secret_file]
        argv += [str(a) for a in args]
        e = chatstack._clean_env({"CHAT_CONFIG": cls.empty_conf})
        e.pop("CHAT_TOKEN_SECRET_FILE", None)
        e.update(env or {})
        r = subprocess.run(argv, input=input, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=e, timeout=60 * chatstack.SLOW)
        rep = chatstack.sanitizer_report(r.stderr)
        if rep:
            raise AssertionError("sanitizer report from chatctl %s:\n%s" % (args, rep))
        if check and r.returncode != 0:
            raise AssertionError("chatctl %s failed (%d): %s" % (args, r.returncode, r.stderr))
        return r

    def ctl(self, *args, **kw):
        return self.run_ctl(*args, **kw)

    def ok(self, *args, **kw):
        r = self.run_ctl(*args, **kw)
        self.assertEqual(r.returncode, 0, "chatctl %s: %s" % (args, r.stderr))
        return r

    def fails(self, *args, code=1, contains=None, **kw):
        """Expect exit status code and exactly one line on stderr, starting
        with "chatctl: "."""
        r = self.run_ctl(*args, **kw)
        self.assertEqual(r.returncode, code, "chatctl %s: rc %d, stderr %r" % (
            args, r.returncode, r.stderr))
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, "chatctl %s: not one line: %r" % (args, r.stderr))
        self.assertTrue(lines[0].startswith("chatctl: "), lines[0])
        self.assertTrue(r.stderr.endswith("\n"))
        if contains:
            self.assertIn(contains, lines[0])
        return lines[0]

    def sql(self, query, params=(), dbname=None):
        return self.pg.execute(query, params, dbname=dbname or self.dbname)

    def add_user(self, name, pw="pw-" + "x", secret=True):
        self.ok(*FAST, "user", "add", name, input=pw + "\n", secret=secret)

    def user_row(self, name):
        rows = self.sql("SELECT pwhash, verifier, disabled FROM users WHERE id = %s", (name,))
        return rows[0] if rows else None

    def outbox(self, gid, after=0):
        return self.sql("SELECT id, event, user_id, by_user, recipients, ts FROM group_outbox "
                        "WHERE group_id = %s AND id > %s ORDER BY id", (gid, after))

    def last_outbox_id(self):
        return self.sql("SELECT COALESCE(max(id), 0) FROM group_outbox")[0][0]

    # -- credentials, computed independently of the C code
    def check_hash(self, stored, password, iterations=None):
        m = HASH_RE.match(stored)
        self.assertIsNotNone(m, stored)
        it, salt, dk = int(m.group(1)), base64.b64decode(m.group(2)), base64.b64decode(m.group(3))
        if iterations is not None:
            self.assertEqual(it, iterations)
        self.assertGreaterEqual(len(salt), 16)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, it, len(dk))
        return hmac.compare_digest(got, dk)

    def kid(self):
        return hmac.new(self.secret, b"mosquitto-chat key id", hashlib.sha256).hexdigest()[:16]

    def verifier(self, user, password):
        mac = hmac.new(self.secret, user.encode() + b"\0" + password.encode(), hashlib.sha256)
        return "%s$%s" % (self.kid(), mac.hexdigest())


class InitTest(ChatctlCase):
    init_schema = False

    def test_init_twice(self):
        files = schema_files()
        self.assertTrue(files)
        r = self.ok("init")
        self.assertEqual(r.stdout.strip(), "schema up to date (%d migration%s applied)" % (
            len(files), "" if len(files) == 1 else "s"))
        r = self.ok("init")
        self.assertEqual(r.stdout.strip(), "schema up to date (0 migrations applied)")
        self.assertEqual(r.stderr, "", "no NOTICE noise on a re-run")
        rows = self.sql("SELECT version, name FROM schema_version ORDER BY version")
        self.assertEqual([n for _, n in rows], files)
        self.assertEqual([v for v, _ in rows], [int(re.match(r"\d+", f).group()) for f in files])
        self.assertEqual(self.sql("SELECT value FROM chat_settings WHERE key = 'partitions'"),
                         [("64",)])
        for t in ("users", "messages", "groups", "group_members", "group_outbox"):
            self.assertEqual(self.sql("SELECT to_regclass(%s) IS NOT NULL", (t,)), [(True,)])
        # a third run with another partition count changes nothing and says so
        r = self.ok("init", "--partitions", "8")
        self.assertIn("0 migrations applied", r.stdout)
        self.assertIn("ignored", r.stderr)
        self.assertEqual(self.sql("SELECT value FROM chat_settings WHERE key = 'partitions'"),
                         [("64",)])

    def test_init_partitions(self):
        db = self.new_db()
        self.ok("init", "--partitions", "4", dbname=db)
        self.assertEqual(self.sql("SELECT value FROM chat_settings WHERE key = 'partitions'",
                                  dbname=db), [("4",)])
        n = self.sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'messages'::regclass",
                     dbname=db)[0][0]
        self.assertEqual(n, 4)

    def test_init_bad_args(self):
        for bad in ("0", "1025", "x", "", "8x"):
            self.fails("init", "--partitions", bad, code=2, contains="--partitions")
        self.fails("init", "--partitions", code=2)
        self.fails("init", "extra", code=2)
        self.fails("--schema-dir", os.path.join(self.dir, "nope"), "init", code=1,
                   contains="schema")


class UserTest(ChatctlCase):

    def test_add_with_secret(self):
        pw = "correct horse battery staple"
        r = self.ok(*FAST, "user", "add", "alice", input=pw + "\n", secret=True)
        self.assertEqual(r.stderr, "")
        pwhash, verifier, disabled = self.user_row("alice")
        self.assertTrue(self.check_hash(pwhash, pw, 1000))
        self.assertFalse(self.check_hash(pwhash, pw + "x"))
        self.assertEqual(verifier, self.verifier("alice", pw))
        self.assertFalse(disabled)
        self.assertEqual(self.sql("SELECT last_seq FROM inbox_counters WHERE user_id = 'alice'"),
                         [(0,)])
        # the clear password is nowhere in the row
        row = self.sql("SELECT users::text FROM users WHERE id = 'alice'")[0][0]
        self.assertNotIn(pw, row)
        self.assertNotIn(base64.b64encode(pw.encode()).decode(), row)

    def test_add_default_iterations(self):
        self.ok("user", "add", "iter", input="pw\n", secret=True)
        pwhash = self.user_row("iter")[0]
        self.assertTrue(self.check_hash(pwhash, "pw", 210000))
        self.ok("--iterations", "5000", "user", "passwd", "iter", input="pw2\n", secret=True)
        self.assertTrue(self.check_hash(self.user_row("iter")[0], "pw2", 5000))
        self.fails("--iterations", "999", "user", "passwd", "iter", input="pw\n", code=2)

    def test_add_without_secret(self):
        r = self.ok(*FAST, "user", "add", "nosecret", input="pw\n", secret=False)
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("warning", lines[0])
        pwhash, verifier, _ = self.user_row("nosecret")
        self.assertTrue(self.check_hash(pwhash, "pw"))
        self.assertIsNone(verifier)
        # the secret can also come from the environment
        self.ok(*FAST, "user", "passwd", "nosecret", input="pw\n",
                env={"CHAT_TOKEN_SECRET_FILE": self.secret_file})
        self.assertEqual(self.user_row("nosecret")[1], self.verifier("nosecret", "pw"))

    def test_password_input(self):
        # first line only, trailing CR LF stripped; inner spaces kept
        self.ok(*FAST, "user", "add", "crlf", input="a b c\r\nsecond line\n", secret=True)
        pwhash, verifier, _ = self.user_row("crlf")
        self.assertTrue(self.check_hash(pwhash, "a b c"))
        self.assertEqual(verifier, self.verifier("crlf", "a b c"))
        # no newline at all
        self.ok(*FAST, "user", "add", "nonl", input="abc", secret=True)
        self.assertTrue(self.check_hash(self.user_row("nonl")[0], "abc"))
        # UTF-8 passwords are bytes like any other
        self.ok(*FAST, "user", "add", "utf", input="p\u00e4ss\u00f6rd\n", secret=True)
        self.assertTrue(self.check_hash(self.user_row("utf")[0], "p\u00e4ss\u00f6rd"))
        # empty, too long
        for bad in ("", "\n", "\r\n"):
            self.fails(*FAST, "user", "add", "empty", input=bad, contains="empty")
        self.fails(*FAST, "user", "add", "long", input="x" * 1025 + "\n", contains="1024")
        self.fails(*FAST, "user", "add", "long", input="x" * 5000, contains="1024")
        self.assertIsNone(self.user_row("empty"))
        self.assertIsNone(self.user_row("long"))
        self.ok(*FAST, "user", "add", "long", input="x" * 1024 + "\n")
        self.assertTrue(self.check_hash(self.user_row("long")[0], "x" * 1024))
        # an empty new password is refused too, and the old one is kept
        old = self.user_row("nonl")[0]
        self.fails(*FAST, "user", "passwd", "nonl", input="\n", contains="empty")
        self.assertEqual(self.user_row("nonl")[0], old)

    def test_duplicate_and_unknown(self):
        self.add_user("dup")
        before = self.user_row("dup")
        self.fails(*FAST, "user", "add", "dup", input="other\n", contains="user dup exists")
        self.assertEqual(self.user_row("dup"), before)
        self.fails(*FAST, "user", "passwd", "ghost", input="pw\n", contains="ghost")
        self.fails("user", "del", "ghost", contains="ghost")
        self.assertIsNone(self.user_row("ghost"))

    def test_invalid_ids(self):
        n = self.sql("SELECT count(*) FROM users")[0][0]
        ng = self.sql("SELECT count(*) FROM groups")[0][0]
        self.add_user("valid")
        for bad in BAD_IDS:
            for args in (("user", "add", bad), ("user", "passwd", bad), ("user", "del", bad),
                         ("group", "list", bad), ("token", bad),
                         ("group", "create", "g", "--owner", bad),
                         ("group", "add", "g", bad), ("group", "remove", "g", bad)):
                line = self.fails(*FAST, *args, input="pw\n", secret=True)
                self.assertIn("invalid user id", line)
            for args in (("group", "create", bad, "--owner", "valid"),
                         ("group", "add", bad, "valid"), ("group", "remove", bad, "valid"),
                         ("group", "del", bad)):
                line = self.fails(*args)
                self.assertIn("invalid group id", line)
        self.assertEqual(self.sql("SELECT count(*) FROM users")[0][0], n + 1)
        self.assertEqual(self.sql("SELECT count(*) FROM groups")[0][0], ng)
        # the longest valid id works
        self.add_user("a" * 64)

    def test_ids_starting_with_dash(self):
        self.fails(*FAST, "user", "add", "-dash", input="pw\n", code=2)
        self.ok(*FAST, "user", "add", "--", "-dash", input="pw\n")
        self.assertIsNotNone(self.user_row("-dash"))

    def test_passwd(self):
        self.add_user("pat", "old-pw")
        self.ok(*FAST, "user", "passwd", "pat", input="new-pw\n", secret=True)
        pwhash, verifier, _ = self.user_row("pat")
        self.assertTrue(self.check_hash(pwhash, "new-pw"))
        self.assertFalse(self.check_hash(pwhash, "old-pw"))
        self.assertEqual(verifier, self.verifier("pat", "new-pw"))
        # without a secret the stale verifier is cleared, not kept
        r = self.ok(*FAST, "user", "passwd", "pat", input="newer\n")
        self.assertIn("warning", r.stderr)
        self.assertIsNone(self.user_row("pat")[1])

    def test_list(self):
        for u in ("zed", "Bob", "amy"):
            self.add_user(u)
        out = self.ok("user", "list").stdout.split()
        self.assertEqual(out, sorted(out))
        for u in ("zed", "Bob", "amy"):
            self.assertIn(u, out)

    def test_del(self):
        for u in ("dora", "eve", "fay"):
            self.add_user(u)
        self.ok("group", "create", "dteam", "--owner", "dora")
        self.ok("group", "add", "dteam", "eve")
        self.ok("group", "add", "dteam", "fay")
        self.ok("group", "create", "eveonly", "--owner", "eve")
        self.ok("group", "create", "dsolo", "--owner", "dora")
        q = self.sql
        q("INSERT INTO messages (user_id, seq, kind, ts, from_user, to_user, peer, body) "
          "VALUES ('dora', 1, 'msg', 1, 'eve', 'dora', 'eve', 'hi'), "
          "('eve', 1, 'msg', 1, 'eve', 'dora', 'dora', 'hi')")
        q("INSERT INTO receipts VALUES ('dora', 1, 'read', 1), ('eve', 1, 'read', 1)")
        q("INSERT INTO read_marks VALUES ('dora', 'dm', 'eve', 1), ('eve', 'dm', 'dora', 1)")
        q("INSERT INTO contacts VALUES ('dora', 'eve'), ('eve', 'dora'), ('eve', 'fay')")
        q("INSERT INTO presence VALUES ('dora', 'online', 1, NULL), ('eve', 'online', 1, NULL)")
        mark = self.last_outbox_id()

        r = self.ok("user", "del", "dora")
        self.assertEqual(r.stderr, "")
        self.assertIsNone(self.user_row("dora"))
        for table, col in (("inbox_counters", "user_id"), ("messages", "user_id"),
                           ("receipts", "user_id"), ("read_marks", "user_id"),
                           ("contacts", "user_id"), ("contacts", "peer"),
                           ("presence", "user_id"), ("group_members", "user_id")):
            self.assertEqual(q("SELECT count(*) FROM %s WHERE %s = 'dora'" % (table, col))[0][0],
                             0, "%s.%s" % (table, col))
        # other users' rows are untouched
        self.assertEqual(q("SELECT count(*) FROM messages WHERE user_id = 'eve'")[0][0], 1)
        self.assertEqual(q("SELECT count(*) FROM receipts WHERE user_id = 'eve'")[0][0], 1)
        self.assertEqual(q("SELECT peer FROM contacts WHERE user_id = 'eve'"), [("fay",)])
        # groups they own keep existing
        self.assertEqual(q("SELECT owner FROM groups WHERE id = 'dteam'"), [("dora",)])
        self.assertEqual(q("SELECT count(*) FROM groups WHERE id = 'dsolo'")[0][0], 1)
        self.assertEqual(sorted(x for x, in q("SELECT user_id FROM group_members "
                                                 "WHERE group_id = 'dteam'")), ["eve", "fay"])
        # the remaining members of dteam are told; nobody is left in dsolo
        rows = self.sql("SELECT group_id, event, user_id, by_user, recipients FROM group_outbox "
                        "WHERE id > %s ORDER BY id", (mark,))
        self.assertEqual(len(rows), 1, rows)
        gid, ev, user, by, rec = rows[0]
        self.assertEqual((gid, ev, user, by), ("dteam", "removed", "dora", None))
        self.assertEqual(sorted(rec), ["eve", "fay"])
        # pending outbox events no longer list the deleted user
        n = q("SELECT count(*) FROM group_outbox WHERE 'dora' = ANY(recipients)")[0][0]
        self.assertEqual(n, 0)
        # the name can be registered again, with a fresh inbox
        self.add_user("dora")
        self.assertEqual(q("SELECT last_seq FROM inbox_counters WHERE user_id = 'dora'"), [(0,)])
        self.assertEqual(self.ok("group", "list", "dora").stdout, "")
        self.fails("user", "del", "nobody-here", contains="nobody-here")


class GroupTest(ChatctlCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for u in ("ann", "ben", "cat", "dan"):
            cls.run_ctl(*FAST, "user", "add", u, input="pw\n", secret=True, check=True)

    def assert_event(self, row, event, user, recipients, ordered=False):
        _, ev, uid, by, rec, ts = row
        self.assertEqual((ev, uid, by), (event, user, None))
        if ordered:
            self.assertEqual(rec, recipients)
        else:
            self.assertEqual(sorted(rec), sorted(recipients))
            self.assertEqual(len(rec), len(set(rec)))
        now = time.time() * 1000
        self.assertLess(abs(now - ts), 600000, "ts is ms since the epoch")

    def members(self, gid):
        return sorted(u for u, in self.sql("SELECT user_id FROM group_members WHERE group_id = %s",
                                           (gid,)))

    def test_lifecycle(self):
        for u in ("lann", "lben", "lcat", "ldan"):
            self.add_user(u)
        self.ok("group", "create", "team", "--owner", "lann")
        self.assertEqual(self.sql("SELECT owner FROM groups WHERE id = 'team'"), [("lann",)])
        self.assertEqual(self.members("team"), ["lann"])
        ob = self.outbox("team")
        self.assertEqual(len(ob), 1)
        self.assert_event(ob[0], "created", "lann", ["lann"], ordered=True)

        self.ok("group", "add", "team", "lben")
        self.ok("group", "add", "team", "lcat")
        ob = self.outbox("team", ob[-1][0])
        self.assertEqual(len(ob), 2)
        self.assert_event(ob[0], "added", "lben", ["lann", "lben"])
        self.assert_event(ob[1], "added", "lcat", ["lann", "lben", "lcat"])
        self.assertEqual(self.members("team"), ["lann", "lben", "lcat"])

        out = self.ok("group", "list").stdout.splitlines()
        self.assertIn("team owner=lann members=3", out)
        self.assertEqual(out, sorted(out))
        self.assertEqual(self.ok("group", "list", "lben").stdout.splitlines(), ["team"])
        self.assertEqual(self.ok("group", "list", "ldan").stdout, "")

        self.ok("group", "remove", "team", "lben")
        ob = self.outbox("team", ob[-1][0])
        self.assertEqual(len(ob), 1)
        self.assert_event(ob[0], "removed", "lben", ["lben", "lann", "lcat"])
        self.assertEqual(self.members("team"), ["lann", "lcat"])
        self.assertEqual(self.ok("group", "list", "lben").stdout, "")

        # the owner can be removed too (ownership is informational)
        self.ok("group", "remove", "team", "lann")
        ob = self.outbox("team", ob[-1][0])
        self.assert_event(ob[0], "removed", "lann", ["lann", "lcat"])
        self.ok("group", "add", "team", "lann")
        ob = self.outbox("team", ob[-1][0])
        self.assert_event(ob[0], "added", "lann", ["lann", "lcat"])

        self.ok("group", "del", "team")
        ob = self.outbox("team", ob[-1][0])
        self.assertEqual(len(ob), 2)
        self.assertEqual(sorted(r[2] for r in ob), ["lann", "lcat"])
        for row in ob:
            self.assert_event(row, "removed", row[2], ["lann", "lcat"])
        self.assertEqual(self.sql("SELECT count(*) FROM groups WHERE id = 'team'"), [(0,)])
        self.assertEqual(self.members("team"), [])
        self.assertFalse([l for l in self.ok("group", "list").stdout.splitlines()
                          if l.startswith("team ")])

    def test_errors(self):
        self.ok("group", "create", "errs", "--owner=ben")
        mark = self.last_outbox_id()
        self.fails("group", "create", "errs", "--owner", "ann", contains="group errs exists")
        self.fails("group", "create", "g-nobody", "--owner", "nobody", contains="nobody")
        self.fails("group", "add", "errs", "ben", contains="already a member")
        self.fails("group", "add", "errs", "nobody", contains="nobody")
        self.fails("group", "add", "no-such-group", "ann", contains="no-such-group")
        self.fails("group", "remove", "errs", "ann", contains="not a member")
        self.fails("group", "remove", "no-such-group", "ann", contains="no-such-group")
        self.fails("group", "del", "no-such-group", contains="no-such-group")
        self.fails("group", "list", "nobody", contains="nobody")
        # nothing changed, nothing was queued
        self.assertEqual(self.last_outbox_id(), mark)
        self.assertEqual(self.members("errs"), ["ben"])
        self.assertEqual(self.sql("SELECT count(*) FROM groups WHERE id IN "
                                  "('g-nobody', 'no-such-group')"), [(0,)])
        # usage errors
        self.fails("group", "create", "g2", code=2, contains="--owner")
        self.fails("group", "create", code=2)
        self.fails("group", "add", "errs", code=2)
        self.fails("group", "add", "errs", "ann", "ben", code=2)
        self.fails("group", "frob", code=2)
        self.fails("group", code=2)
        self.fails("group", "create", "g2", "--owner", "ann", "--color", "red", code=2)

    def test_recreate_continues_gseq(self):
        self.ok("group", "create", "again", "--owner", "ann")
        self.sql("INSERT INTO group_messages (group_id, gseq, id, ts, from_user, body) "
                 "VALUES ('again', 1, 1, 1, 'ann', 'x'), ('again', 2, 2, 1, 'ann', 'y')")
        self.sql("UPDATE groups SET last_gseq = 2 WHERE id = 'again'")
        self.ok("group", "del", "again")
        self.ok("group", "create", "again", "--owner", "cat")
        self.assertEqual(self.sql("SELECT owner, last_gseq FROM groups WHERE id = 'again'"),
                         [("cat", 2)])

    def test_concurrent_adds(self):
        """Concurrent runs serialise on the group row: every `added` event's
        recipients are exactly the members at that point."""
        users = ["cc%02d" % i for i in range(12)]
        for u in users:
            self.add_user(u)
        self.ok("group", "create", "crowd", "--owner", "dan")
        mark = self.outbox("crowd")[-1][0]
        results = []

        def add(u):
            results.append(self.run_ctl("group", "add", "crowd", u))

        threads = [threading.Thread(target=add, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r.returncode for r in results], [0] * len(users),
                         [r.stderr for r in results])
        members = {"dan"}
        for row in self.outbox("crowd", mark):
            members.add(row[2])
            self.assert_event(row, "added", row[2], sorted(members))
        self.assertEqual(members, {"dan"} | set(users))

        # concurrent removals and user deletions keep the lists consistent too
        results.clear()
        mark = self.last_outbox_id()
        threads = [threading.Thread(target=lambda u=u: results.append(
            self.run_ctl("group", "remove", "crowd", u))) for u in users[:6]]
        threads += [threading.Thread(target=lambda u=u: results.append(
            self.run_ctl("user", "del", u))) for u in users[6:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r.returncode for r in results], [0] * len(users),
                         [r.stderr for r in results])
        # recipients: the removed user and who is left; a deleted user is
        # also taken out of every event still waiting in the outbox
        deleted = set(users[6:])
        left = set(members)
        for row in self.outbox("crowd", mark):
            left.discard(row[2])
            self.assertEqual(row[1], "removed")
            expect = (left | {row[2]}) - deleted
            self.assert_event(row, "removed", row[2], sorted(expect))
        self.assertEqual(left, {"dan"})
        self.assertEqual(self.members("crowd"), ["dan"])


class TokenTest(ChatctlCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_ctl(*FAST, "user", "add", "tom", input="pw\n", secret=True, check=True)

    def decode(self, token):
        parts = token.split(".")
        self.assertEqual(len(parts), 3, token)
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
        want = hmac.new(self.secret, (parts[0] + "." + parts[1]).encode(), hashlib.sha256).digest()
        self.assertTrue(hmac.compare_digest(sig, want), "signature")
        return header, payload

    def test_token(self):
        r = self.ok("token", "tom", secret=True)
        self.assertEqual(r.stderr, "")
        token = r.stdout.strip()
        self.assertEqual(r.stdout, token + "\n")
        header, payload = self.decode(token)
        self.assertEqual(header.get("alg"), "HS256")
        self.assertEqual(payload["sub"], "tom")
        self.assertEqual(payload["exp"] - payload["iat"], 86400)
        self.assertLess(abs(payload["iat"] - time.time()), 600)

    def test_ttl(self):
        _, payload = self.decode(self.ok("token", "tom", "--ttl", "60", secret=True).stdout.strip())
        self.assertEqual(payload["exp"] - payload["iat"], 60)
        _, payload = self.decode(self.ok("token", "--ttl=120", "tom", secret=True).stdout.strip())
        self.assertEqual(payload["exp"] - payload["iat"], 120)
        for bad in ("0", "-5", "abc", "", "99999999999999999999"):
            self.fails("token", "tom", "--ttl", bad, secret=True, code=2, contains="--ttl")

    def test_errors(self):
        self.fails("token", "nobody", secret=True, contains="nobody")
        self.fails("token", "tom", secret=False, contains="secret")
        self.fails("--token-secret-file", os.path.join(self.dir, "missing"), "token", "tom",
                   contains="missing")
        short = os.path.join(self.dir, "short.secret")
        with open(short, "w") as f:
            f.write("too short\n")
        self.fails("--token-secret-file", short, "token", "tom", contains="short.secret")
        self.fails("token", secret=True, code=2)
        self.run_ctl(*FAST, "user", "add", "off", input="pw\n", check=True)
        self.sql("UPDATE users SET disabled = true WHERE id = 'off'")
        self.fails("token", "off", secret=True, contains="disabled")


class CliTest(ChatctlCase):

    def test_usage(self):
        r = self.ok("--help", db=False)
        self.assertIn("usage: chatctl", r.stdout)
        for cmd in ("init", "user add", "group create", "token"):
            self.assertIn(cmd, r.stdout)
        self.assertIn("usage", self.ok("user", "--help", db=False).stdout)
        self.fails(db=False, code=2)
        self.fails("frobnicate", code=2, contains="frobnicate")
        self.fails("--frob", "user", "list", code=2, contains="--frob")
        self.fails("user", code=2)
        self.fails("user", "add", code=2)
        self.fails("user", "add", "a", "b", input="pw\n", code=2)
        self.fails("user", "frob", "x", code=2)
        self.fails("--db", db=False, code=2)
        self.fails("token", "x", "--ttl", code=2)

    def test_unreachable_database(self):
        bad = "host=%s port=1 dbname=x connect_timeout=2" % os.path.join(self.dir, "nope")
        self.fails("--db", bad, "user", "list", db=False, contains="cannot connect")
        self.fails("--db", bad, "init", db=False, contains="cannot connect")

    def test_settings_resolution(self):
        self.run_ctl(*FAST, "user", "add", "res", input="pw\n", secret=True, check=True)

        def only_res(r):
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("res", r.stdout.split())

        # CHAT_DB
        only_res(self.run_ctl("user", "list", db=False, env={"CHAT_DB": self.conninfo()}))
        # --db wins over CHAT_DB
        only_res(self.run_ctl("user", "list", env={"CHAT_DB": "host=/nonexistent dbname=x"}))
        # the PG* environment
        env = {"PGHOST": self.pg.socket_dir, "PGPORT": str(self.pg.port),
               "PGDATABASE": self.dbname, "PGUSER": self.pg.SUPERUSER}
        only_res(self.run_ctl("user", "list", db=False, env=env))
        # CHAT_DB wins over PG*
        env2 = dict(env, CHAT_DB="host=/nonexistent dbname=x")
        self.fails("user", "list", db=False, env=env2, contains="cannot connect")
        # the defaults file: db and a secret path relative to the file
        sub = os.path.join(self.dir, "conf")
        os.makedirs(sub, exist_ok=True)
        shutil.copy(self.secret_file, os.path.join(sub, "tok.secret"))
        conf = os.path.join(sub, "chat.conf")
        with open(conf, "w") as f:
            f.write("# local stack\ndb = %s\ntoken_secret_file = tok.secret\n" % self.conninfo())
        only_res(self.run_ctl("user", "list", db=False, env={"CHAT_CONFIG": conf}))
        r = self.run_ctl("token", "res", db=False, env={"CHAT_CONFIG": conf})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(b64url_decode(r.stdout.split(".")[1]))["sub"], "res")
        # the PG* environment wins over the defaults file
        only_res(self.run_ctl("user", "list", db=False,
                              env=dict(env, CHAT_CONFIG=os.path.join(self.dir, "missing.conf"))))
        # an explicit CHAT_CONFIG that cannot be read, or is malformed, is an error
        self.fails("user", "list", db=False, env={"CHAT_CONFIG": os.path.join(self.dir, "x.conf")},
                   contains="x.conf")
        bad = os.path.join(self.dir, "bad.conf")
        with open(bad, "w") as f:
            f.write("db = x\nthis line is wrong\n")
        self.fails("user", "list", db=False, env={"CHAT_CONFIG": bad}, contains="bad.conf:2")

    def test_error_lines_are_safe(self):
        """Untrusted arguments are echoed escaped, on one line."""
        line = self.fails("user", "add", "evil\r\n\x1b[31mid", input="pw\n")
        self.assertNotIn("\x1b", line)
        line = self.fails("frob\nx", code=2)
        self.assertIn("frob\\x0ax", line)


if __name__ == "__main__":
    chatstack.main()
