-- SPDX-License-Identifier: EPL-2.0
-- seed.sql: fill an empty mosquitto-chat database with rows shaped exactly
-- as the broker's writer stores them, for the chat-rest benchmark.
--
--   psql -v users=10000 -v dms=450000 -v gmsgs=5000 -v gsize=20 -f seed.sql
--
-- Defaults give 1,000,000 inbox rows over 10,000 users:
--   dms   direct messages, two inbox rows each (recipient's copy, and the
--         sender's copy with its cid): 900,000 rows;
--   gmsgs group messages in users/gsize groups of gsize members, one body
--         in group_messages and one inbox row per member: 100,000 rows.
-- Every user has a busy thread with a "partner" (user id xor 1, 60% of the
-- sender's messages) and quieter ones with 4 other peers, so a history
-- page of 50 is full. seq is gap-free per user in timestamp order, as the
-- writer hands it out; inbox_counters, groups.last_gseq, contacts,
-- read_marks (a few unread per conversation) and presence are filled to
-- match. The password of every user is "benchpw".
\set ON_ERROR_STOP on
\if :{?users}
\else
\set users 10000
\endif
\if :{?dms}
\else
\set dms 450000
\endif
\if :{?gmsgs}
\else
\set gmsgs 5000
\endif
\if :{?gsize}
\else
\set gsize 20
\endif

BEGIN;
SET LOCAL synchronous_commit = off;

-- pbkdf2-sha512, 210000 iterations, of "benchpw" (the bench does not log in
-- over REST; it mints tokens with the secret).
INSERT INTO users (id, pwhash)
SELECT 'u' || lpad(i::text, 5, '0'),
       'pbkdf2-sha512$210000$YmVuY2hzYWx0YmVuY2hzYQ==$yXx040bxwMQkcntANKs4cDN5k+cQnXoBoy6YRFkpoVI='
  FROM generate_series(0, :users - 1) AS i;

-- Staging: one line per inbox row in global time order (t), before seq.
CREATE UNLOGGED TABLE seed_rows (
    t bigint, user_id text, id bigint, ts bigint, from_user text, to_user text, peer text,
    group_id text, gseq bigint, cid text, body text
);

-- Direct messages: sender s, recipient r; ts 10 ms apart from 2025-01-01.
-- s walks all users once per pass (7919 is prime to the user count); the
-- pass number picks the partner (6 passes in 10) or one of 4 other peers.
WITH d AS (
    SELECT i,
           (i * 7919) % :users AS s,
           CASE WHEN (i / :users) % 10 < 6 THEN ((i * 7919) % :users) # 1
                ELSE ((i * 7919) % :users + 1 + ((i / :users) % 10) * 131) % :users END AS r,
           1735689600000 + i * 10 AS ts
      FROM generate_series(1::bigint, :dms) AS i
), n AS (
    SELECT i, ts, 'u' || lpad(s::text, 5, '0') AS su, 'u' || lpad(r::text, 5, '0') AS ru,
           ((ts - 1704067200000) << 20) | (i & 65535) AS id
      FROM d
)
INSERT INTO seed_rows
SELECT ts * 100, ru, id, ts, su, ru, su, NULL::text, NULL::bigint, NULL::text,
       'message ' || i || ' from ' || su || ' to ' || ru || ': lorem ipsum dolor sit amet'
  FROM n
UNION ALL
SELECT ts * 100 + 1, su, id, ts, su, ru, ru, NULL::text, NULL::bigint, 'c' || i,
       'message ' || i || ' from ' || su || ' to ' || ru || ': lorem ipsum dolor sit amet'
  FROM n;

-- Groups g00000.. of gsize consecutive users; owner = first member.
INSERT INTO groups (id, owner)
SELECT 'g' || lpad(g::text, 5, '0'), 'u' || lpad((g * :gsize)::text, 5, '0')
  FROM generate_series(0, :users / :gsize - 1) AS g;
INSERT INTO group_members (group_id, user_id)
SELECT 'g' || lpad(g::text, 5, '0'), 'u' || lpad((g * :gsize + j)::text, 5, '0')
  FROM generate_series(0, :users / :gsize - 1) AS g, generate_series(0, :gsize - 1) AS j;

-- Group messages, spread over the same time range (5 ms offset).
CREATE UNLOGGED TABLE seed_gm AS
SELECT j,
       'g' || lpad((j % (:users / :gsize))::text, 5, '0') AS gid,
       (j / (:users / :gsize)) + 1 AS gseq,
       'u' || lpad(((j % (:users / :gsize)) * :gsize + (j * 7) % :gsize)::text, 5, '0') AS sender,
       1735689600000 + (j::bigint * :dms / :gmsgs) * 10 + 5 AS ts
  FROM generate_series(0, :gmsgs - 1) AS j;
INSERT INTO group_messages (group_id, gseq, id, ts, from_user, body, meta)
SELECT gid, gseq, ((ts - 1704067200000) << 20) | 65535 - (j % 4096), ts, sender,
       'group message ' || j || ' from ' || sender || ' in ' || gid,
       CASE WHEN j % 5 = 0 THEN '{"reply_to":"' || (j - 1) || '"}' END
  FROM seed_gm;
INSERT INTO seed_rows
SELECT gm.ts * 100 + 2 + (m.user_id = gm.sender)::int, m.user_id,
       ((gm.ts - 1704067200000) << 20) | 65535 - (gm.j % 4096), gm.ts, gm.sender, NULL, NULL,
       gm.gid, gm.gseq, CASE WHEN m.user_id = gm.sender THEN 'g' || gm.j END, NULL
  FROM seed_gm gm JOIN group_members m ON m.group_id = gm.gid;
UPDATE groups g SET last_gseq = x.last FROM (SELECT gid, max(gseq) AS last FROM seed_gm GROUP BY gid) x
 WHERE g.id = x.gid;

-- Inbox rows with gap-free per-user seq in time order.
INSERT INTO messages (user_id, seq, kind, id, ts, from_user, to_user, peer, group_id, gseq, cid, body)
SELECT user_id, row_number() OVER (PARTITION BY user_id ORDER BY t), 'msg', id, ts, from_user,
       to_user, peer, group_id, gseq, cid, body
  FROM seed_rows;

INSERT INTO inbox_counters (user_id, last_seq)
SELECT u.id, COALESCE(c.n, 0)
  FROM users u LEFT JOIN (SELECT user_id, count(*) AS n FROM seed_rows GROUP BY user_id) c
    ON c.user_id = u.id;

INSERT INTO contacts (user_id, peer)
SELECT DISTINCT user_id, peer FROM seed_rows WHERE peer IS NOT NULL;

-- Read marks: everything but the newest 3 messages from the peer is read.
INSERT INTO read_marks (user_id, kind, conv, read_seq)
SELECT user_id, 'dm', peer, seqs[3]
  FROM (SELECT user_id, peer, array_agg(seq ORDER BY seq DESC) AS seqs
          FROM messages WHERE peer IS NOT NULL AND from_user <> user_id
         GROUP BY user_id, peer) x
 WHERE cardinality(seqs) >= 3;

INSERT INTO presence (user_id, status, ts, last_seen)
SELECT id, CASE WHEN substr(id, 2)::int % 10 = 0 THEN 'online' ELSE 'offline' END,
       1735689600000 + substr(id, 2)::int * 1000, 1735689600000 + substr(id, 2)::int * 1000
  FROM users;

DROP TABLE seed_rows;
DROP TABLE seed_gm;
COMMIT;

ANALYZE;
SELECT (SELECT count(*) FROM messages) AS inbox_rows,
       (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM group_messages) AS group_messages;
