-- SPDX-License-Identifier: EPL-2.0
-- 001_init.sql: the whole first schema of mosquitto-chat.
--
-- Applied by `chatctl init` inside one transaction, recorded in
-- schema_version, never edited once released (later changes are 002_...).
-- The number of hash partitions is read from the session setting
-- chat.partitions (chatctl sets it from --partitions, default 64) and
-- remembered in chat_settings; it cannot change without a data migration.
--
-- Table design
-- * Every per-user table is keyed by user_id first and every primary key
--   and unique constraint contains user_id, so the tables can later be
--   spread over several PostgreSQL servers by user_id (Citus-style
--   distribution or manual sharding) without a schema change.
-- * messages is a user's inbox: one row per (user, seq). A direct message
--   is two rows (the recipient's copy and the sender's copy) sharing one
--   message id; only the sender's copy carries the client's cid, and
--   UNIQUE (user_id, cid) is the per-sender idempotency key.
-- * Group message bodies are stored once in group_messages, partitioned by
--   group_id; each member's inbox row only points at (group_id, gseq).
-- * seq is gap-free per user. The broker plugin's writer thread is the only
--   writer of inbox rows: it owns inbox_counters and group counters, and
--   PRIMARY KEY (user_id, seq) turns any concurrent writer's clash into an
--   error instead of a gap or a duplicate.

CREATE TABLE IF NOT EXISTS chat_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

INSERT INTO chat_settings (key, value)
VALUES ('partitions', COALESCE(NULLIF(current_setting('chat.partitions', true), ''), '64'))
ON CONFLICT (key) DO NOTHING;

-- Accounts. pwhash is "pbkdf2-sha512$<iterations>$<salt b64>$<hash b64>".
-- verifier is "<key id>$<hex HMAC-SHA256(server secret, user 0x00 password)>":
-- a peppered verifier that lets the broker check an MQTT password in
-- microseconds on its only thread; it is useless without the server's
-- secret file, which is never stored in the database.
CREATE TABLE IF NOT EXISTS users (
    id         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    pwhash     text NOT NULL,
    verifier   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled   boolean NOT NULL DEFAULT false
);

-- Last seq handed out per user (gap-free counter of inbox events).
CREATE TABLE IF NOT EXISTS inbox_counters (
    user_id  text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    last_seq bigint NOT NULL DEFAULT 0
);

-- Inbox events. kind: 'msg' | 'receipt' | 'group'.
--   msg (direct):  id, ts, from_user, to_user, peer (the other party), cid
--                  (sender's copy only), body, meta (JSON object text)
--   msg (group):   id, ts, from_user, group_id, gseq, cid (sender's copy);
--                  body and meta live in group_messages
--   receipt:       ts, from_user (the reader), status, ids
--   group:         ts, group_id, gevent, guser, gby
CREATE TABLE IF NOT EXISTS messages (
    user_id   text   NOT NULL,
    seq       bigint NOT NULL,
    kind      text   NOT NULL CHECK (kind IN ('msg', 'receipt', 'group')),
    id        bigint,
    ts        bigint NOT NULL,
    from_user text,
    to_user   text,
    peer      text,
    group_id  text,
    gseq      bigint,
    cid       text,
    body      text,
    meta      text,
    status    text CHECK (status IS NULL OR status IN ('delivered', 'read')),
    ids       text[],
    gevent    text CHECK (gevent IS NULL OR gevent IN ('created', 'added', 'removed')),
    guser     text,
    gby       text,
    PRIMARY KEY (user_id, seq),
    UNIQUE (user_id, cid)
) PARTITION BY HASH (user_id);

-- Group bodies, stored once per group message.
CREATE TABLE IF NOT EXISTS group_messages (
    group_id  text   NOT NULL,
    gseq      bigint NOT NULL,
    id        bigint NOT NULL,
    ts        bigint NOT NULL,
    from_user text   NOT NULL,
    body      text   NOT NULL,
    meta      text,
    PRIMARY KEY (group_id, gseq)
) PARTITION BY HASH (group_id);

-- Create the hash partitions of one table; the count is an integer and the
-- table name is quoted with %I, so no caller text reaches the SQL.
CREATE OR REPLACE FUNCTION chat_make_partitions(parent regclass, n integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    base text := (SELECT relname FROM pg_class WHERE oid = parent);
BEGIN
    IF n < 1 OR n > 1024 THEN
        RAISE EXCEPTION 'partition count % out of range 1..1024', n;
    END IF;
    FOR i IN 0 .. n - 1 LOOP
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                       base || '_p' || i, parent, n, i);
    END LOOP;
END $$;

SELECT chat_make_partitions('messages', (SELECT value::integer FROM chat_settings WHERE key = 'partitions'));
SELECT chat_make_partitions('group_messages', (SELECT value::integer FROM chat_settings WHERE key = 'partitions'));

-- The broker preloads the last day's (sender, cid) pairs at start, to
-- recognise retries even while PostgreSQL is down later.
CREATE INDEX IF NOT EXISTS messages_cid_ts_idx ON messages (ts) WHERE cid IS NOT NULL;
-- Receipts look up "did this user receive message id X"; read marks look up
-- the caller's own seq of a message.
CREATE INDEX IF NOT EXISTS messages_user_id_idx ON messages (user_id, id);
-- Conversation history: a DM thread and a group thread of one user.
CREATE INDEX IF NOT EXISTS messages_user_peer_idx ON messages (user_id, peer, seq) WHERE peer IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_user_group_idx ON messages (user_id, group_id, gseq) WHERE kind = 'msg' AND group_id IS NOT NULL;

-- Groups. last_gseq is the per-group gap-free counter (owned by the writer).
CREATE TABLE IF NOT EXISTS groups (
    id         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    owner      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_gseq  bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS group_members (
    group_id text NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS group_members_user_idx ON group_members (user_id);

-- Membership changes made by chatctl wait here until the broker's writer
-- turns them into inbox events (with seq) and deletes them, in one
-- transaction: exactly once, in id order. recipients is who gets the event.
CREATE TABLE IF NOT EXISTS group_outbox (
    id         bigserial PRIMARY KEY,
    group_id   text NOT NULL,
    event      text NOT NULL CHECK (event IN ('created', 'added', 'removed')),
    user_id    text NOT NULL,
    by_user    text,
    recipients text[] NOT NULL,
    ts         bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Delivery state per (reader, message): 'read' implies 'delivered' and a
-- later 'delivered' never downgrades a 'read'.
CREATE TABLE IF NOT EXISTS receipts (
    user_id text   NOT NULL,
    msg_id  bigint NOT NULL,
    status  text   NOT NULL CHECK (status IN ('delivered', 'read')),
    ts      bigint NOT NULL,
    PRIMARY KEY (user_id, msg_id)
) PARTITION BY HASH (user_id);
SELECT chat_make_partitions('receipts', (SELECT value::integer FROM chat_settings WHERE key = 'partitions'));

-- Per user and conversation: the caller's seq of the newest message they
-- sent a 'read' receipt for. kind 'dm' (conv = peer) or 'group' (conv = gid).
CREATE TABLE IF NOT EXISTS read_marks (
    user_id  text   NOT NULL,
    kind     text   NOT NULL CHECK (kind IN ('dm', 'group')),
    conv     text   NOT NULL,
    read_seq bigint NOT NULL,
    PRIMARY KEY (user_id, kind, conv)
);

-- Users who share a direct conversation (both directions stored), for
-- presence visibility.
CREATE TABLE IF NOT EXISTS contacts (
    user_id text NOT NULL,
    peer    text NOT NULL,
    PRIMARY KEY (user_id, peer)
);

-- Last known presence per user (written by the broker's writer thread).
CREATE TABLE IF NOT EXISTS presence (
    user_id   text PRIMARY KEY,
    status    text NOT NULL CHECK (status IN ('online', 'offline')),
    ts        bigint NOT NULL,
    last_seen bigint
);

-- Counters the broker plugin shares with chat-rest's /metrics.
CREATE TABLE IF NOT EXISTS plugin_stats (
    name       text PRIMARY KEY,
    value      bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Any change to users or memberships wakes the broker's directory thread
-- (LISTEN chat_directory), whatever tool made it.
CREATE OR REPLACE FUNCTION chat_notify_directory() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chat_directory', TG_TABLE_NAME);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS users_notify ON users;
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION chat_notify_directory();
DROP TRIGGER IF EXISTS groups_notify ON groups;
CREATE TRIGGER groups_notify AFTER INSERT OR DELETE ON groups
    FOR EACH STATEMENT EXECUTE FUNCTION chat_notify_directory();
DROP TRIGGER IF EXISTS group_members_notify ON group_members;
CREATE TRIGGER group_members_notify AFTER INSERT OR UPDATE OR DELETE ON group_members
    FOR EACH STATEMENT EXECUTE FUNCTION chat_notify_directory();
DROP TRIGGER IF EXISTS group_outbox_notify ON group_outbox;
CREATE TRIGGER group_outbox_notify AFTER INSERT ON group_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION chat_notify_directory();
