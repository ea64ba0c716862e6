/* SPDX-License-Identifier: EPL-2.0
 * db.c: chat-rest's PostgreSQL access. Every libmicrohttpd worker thread
 * lazily opens its own PGconn (kept in thread-local storage and listed in
 * a registry so shutdown can close them), prepares the statements below on
 * first use, and reconnects after a failure. Once a connection attempt has
 * failed, a shared gate lets one worker at a time probe the server, at most
 * every CHAT_DB_RETRY_NS, while the others answer 503 at once (so a server
 * that does not answer cannot tie up every worker for connect_timeout);
 * the first success opens the gate for all. The daemon never exits because
 * the database is down.
 *
 * Every statement filters the hash-partitioned tables (messages by
 * user_id, group_messages by group_id) on their partition key, so each
 * lookup touches one partition (see bench/rest/EXPLAIN.txt). Values only
 * ever travel as parameters.
 */
#include "rest.h"
#include "pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAT_DB_RETRY_NS (250LL * 1000000LL)
#define CHAT_DB_PROBE_NS (15LL * 1000000000LL) /* longer than one connect attempt */

/* Columns of a rendered inbox row, in the order routes.c reads them:
 *  0 seq, 1 kind, 2 id, 3 ts, 4 from_user, 5 to_user, 6 group_id, 7 gseq,
 *  8 cid, 9 body, 10 meta, 11 status, 12 ids, 13 gevent, 14 guser, 15 gby.
 * A group message's body and meta live in group_messages: the inbox and
 * conversation pages leave them NULL and routes.c fetches them with
 * CHAT_Q_GROUP_BODIES (one statement per group, which prunes to that
 * group's partition when the executor starts) or CHAT_Q_GROUP_BODIES_MANY.
 * A join to group_messages inside the page query would make the executor
 * open every partition of group_messages on every call (pruning can only
 * happen per row there), which costs more than the page itself. */
#define EV_COLS \
	"m.seq, m.kind, m.id, m.ts, m.from_user, m.to_user, m.group_id, m.gseq, m.cid, " \
	"m.body, m.meta, m.status, m.ids, m.gevent, m.guser, m.gby"

struct stmt {
	const char *name;
	int nparams;
	const char *sql;
};

static const struct stmt STMTS[CHAT_Q__COUNT] = {
	[CHAT_Q_PING] = {"chat_ping", 0, "SELECT 1"},

	[CHAT_Q_USER_ENABLED] = {"chat_user_enabled", 1,
		"SELECT NOT disabled FROM users WHERE id = $1"},

	[CHAT_Q_LOGIN_USER] = {"chat_login_user", 1,
		"SELECT pwhash, verifier, disabled FROM users WHERE id = $1"},

	/* Only if the hash is still the one just verified (no race with a
	 * concurrent `chatctl user passwd`). */
	[CHAT_Q_SET_VERIFIER] = {"chat_set_verifier", 3,
		"UPDATE users SET verifier = $2 WHERE id = $1 AND pwhash = $3"},

	/* $1 user, $2 after, $3 limit (+1 to learn whether more exist). */
	[CHAT_Q_INBOX] = {"chat_inbox", 3,
		"SELECT " EV_COLS
		" FROM messages m WHERE m.user_id = $1 AND m.seq > $2"
		" ORDER BY m.seq LIMIT $3"},

	/* $1 group, $2 bigint[] of gseq: bodies of one group's messages. */
	[CHAT_Q_GROUP_BODIES] = {"chat_group_bodies", 2,
		"SELECT group_id, gseq, body, meta FROM group_messages"
		" WHERE group_id = $1 AND gseq = ANY ($2::bigint[])"},

	/* $1 text[] of groups, $2 bigint[] of gseq (pairs): bodies from many
	 * groups at once, one keyed probe per pair (OFFSET 0 keeps the
	 * planner from turning it into a hash join over every partition). */
	[CHAT_Q_GROUP_BODIES_MANY] = {"chat_group_bodies_many", 2,
		"SELECT g.group_id, g.gseq, g.body, g.meta"
		" FROM unnest($1::text[], $2::bigint[]) AS k(gid, gseq),"
		" LATERAL (SELECT group_id, gseq, body, meta FROM group_messages"
		"          WHERE group_id = k.gid AND gseq = k.gseq OFFSET 0) g"},

	/* $1 user, $2 limit. The distinct peers and groups of the user's
	 * inbox are walked with a loose index scan (one index probe per
	 * conversation, not one per row); each conversation's newest message
	 * is one more probe, which returns the whole row. Unread = messages from others after the read
	 * mark (for a group, after the gseq of the read-marked message: seq
	 * and gseq grow together in one inbox, and gseq is what the group
	 * index is ordered by). Columns 16 ckind, 17 conv, 18 unread follow
	 * the event. */
	[CHAT_Q_CONVERSATIONS] = {"chat_conversations", 2,
		"WITH RECURSIVE"
		" peers(p) AS ("
		"   SELECT (SELECT peer FROM messages WHERE user_id = $1 AND peer IS NOT NULL"
		"            ORDER BY peer LIMIT 1)"
		"   UNION ALL"
		"   SELECT (SELECT x.peer FROM messages x WHERE x.user_id = $1 AND x.peer > peers.p"
		"            ORDER BY x.peer LIMIT 1)"
		"     FROM peers WHERE peers.p IS NOT NULL),"
		" grps(g) AS ("
		"   SELECT (SELECT group_id FROM messages"
		"            WHERE user_id = $1 AND kind = 'msg' AND group_id IS NOT NULL"
		"            ORDER BY group_id LIMIT 1)"
		"   UNION ALL"
		"   SELECT (SELECT x.group_id FROM messages x"
		"            WHERE x.user_id = $1 AND x.kind = 'msg' AND x.group_id > grps.g"
		"            ORDER BY x.group_id LIMIT 1)"
		"     FROM grps WHERE grps.g IS NOT NULL),"
		" convs AS MATERIALIZED ("
		"   SELECT 'dm'::text AS ckind, peers.p AS conv, l.*"
		"     FROM peers, LATERAL (SELECT " EV_COLS " FROM messages m"
		"                           WHERE m.user_id = $1 AND m.peer = peers.p"
		"                             AND m.kind = 'msg' AND m.group_id IS NULL"
		"                           ORDER BY m.seq DESC LIMIT 1) l"
		"   UNION ALL"
		"   SELECT 'group'::text, grps.g, l.*"
		"     FROM grps, LATERAL (SELECT " EV_COLS " FROM messages m"
		"                          WHERE m.user_id = $1 AND m.kind = 'msg' AND m.group_id = grps.g"
		"                          ORDER BY m.gseq DESC LIMIT 1) l"
		"   ORDER BY seq DESC LIMIT $2)"
		" SELECT t.seq, t.kind, t.id, t.ts, t.from_user, t.to_user, t.group_id, t.gseq, t.cid,"
		"        t.body, t.meta, t.status, t.ids, t.gevent, t.guser, t.gby, t.ckind, t.conv,"
		"   CASE WHEN t.ckind = 'dm' THEN"
		"     (SELECT count(*) FROM messages u WHERE u.user_id = $1 AND u.peer = t.conv"
		"         AND u.kind = 'msg' AND u.group_id IS NULL"
		"         AND u.seq > COALESCE(rm.read_seq, 0) AND u.from_user <> $1)"
		"   ELSE"
		"     (SELECT count(*) FROM messages u WHERE u.user_id = $1 AND u.kind = 'msg'"
		"         AND u.group_id = t.conv"
		"         AND u.gseq > COALESCE((SELECT r.gseq FROM messages r"
		"                                 WHERE r.user_id = $1 AND r.seq = rm.read_seq), 0)"
		"         AND u.seq > COALESCE(rm.read_seq, 0) AND u.from_user <> $1)"
		"   END"
		" FROM convs t"
		" LEFT JOIN read_marks rm ON rm.user_id = $1 AND rm.kind = t.ckind AND rm.conv = t.conv"
		" ORDER BY t.seq DESC"},

	/* $1 user, $2 peer, $3 before (seq), $4 limit+1. Newest first. */
	[CHAT_Q_DM_PAGE] = {"chat_dm_page", 4,
		"SELECT " EV_COLS
		" FROM messages m"
		" WHERE m.user_id = $1 AND m.peer = $2 AND m.kind = 'msg' AND m.group_id IS NULL"
		"   AND m.seq < $3"
		" ORDER BY m.seq DESC LIMIT $4"},

	/* $1 user, $2 group: does the group exist, is the user a member. */
	[CHAT_Q_GROUP_ACCESS] = {"chat_group_access", 2,
		"SELECT EXISTS (SELECT 1 FROM groups WHERE id = $2),"
		"       EXISTS (SELECT 1 FROM group_members WHERE group_id = $2 AND user_id = $1)"},

	/* $1 user, $2 group, $3 before (gseq), $4 limit+1. Only the caller's
	 * own inbox rows (messages stored while a member), newest first. */
	[CHAT_Q_GROUP_PAGE] = {"chat_group_page", 4,
		"SELECT m.seq, m.kind, m.id, m.ts, m.from_user, m.to_user, m.group_id, m.gseq, m.cid,"
		"       g.body, g.meta, m.status, m.ids, m.gevent, m.guser, m.gby"
		" FROM (SELECT * FROM messages WHERE user_id = $1 AND kind = 'msg' AND group_id = $2"
		"         AND gseq < $3 ORDER BY gseq DESC LIMIT $4) m"
		" LEFT JOIN LATERAL (SELECT body, meta FROM group_messages"
		"                     WHERE group_id = $2 AND gseq = m.gseq OFFSET 0) g ON true"
		" ORDER BY m.gseq DESC"},

	/* $1 caller, $2 text[] of names. Visible: the caller, contacts (a
	 * stored DM either way) and members of a common group. */
	[CHAT_Q_PRESENCE] = {"chat_presence", 2,
		"SELECT u.id, p.status, p.last_seen"
		" FROM unnest($2::text[]) WITH ORDINALITY AS q(name, ord)"
		" JOIN users u ON u.id = q.name"
		" LEFT JOIN presence p ON p.user_id = u.id"
		" WHERE u.id = $1"
		"    OR EXISTS (SELECT 1 FROM contacts c WHERE c.user_id = $1 AND c.peer = u.id)"
		"    OR EXISTS (SELECT 1 FROM group_members a"
		"                 JOIN group_members b ON b.group_id = a.group_id"
		"                WHERE a.user_id = $1 AND b.user_id = u.id)"
		" ORDER BY q.ord"},

	[CHAT_Q_PLUGIN_STATS] = {"chat_plugin_stats", 0,
		"SELECT name, value FROM plugin_stats ORDER BY name"},
};

struct dbslot {
	PGconn *c;
	bool prepared[CHAT_Q__COUNT];
	struct dbslot *next;
};

/* 0: connect freely. Otherwise no new connection before this time, and
 * the worker that moves it forward (compare-and-swap) is the one probe. */
static _Atomic int64_t gate_ns;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dbslot *reg_head;
static _Thread_local struct dbslot *tls_slot;

static struct dbslot *slot_get(void)
{
	if(tls_slot) return tls_slot;
	struct dbslot *s = calloc(1, sizeof *s);
	if(!s) return NULL;
	pthread_mutex_lock(&reg_mu);
	s->next = reg_head;
	reg_head = s;
	pthread_mutex_unlock(&reg_mu);
	tls_slot = s;
	return s;
}

static void slot_drop(struct dbslot *s)
{
	if(s->c) PQfinish(s->c);
	s->c = NULL;
	memset(s->prepared, 0, sizeof s->prepared);
}

/* Log database trouble at most every 5 s (plus how many were skipped). */
static void db_log(const char *what, const char *detail)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static int64_t last_ns;
	static unsigned skipped;
	int64_t now = chat_mono_ns();
	pthread_mutex_lock(&mu);
	if(last_ns && now - last_ns < 5000000000LL){
		skipped++;
		pthread_mutex_unlock(&mu);
		return;
	}
	unsigned sk = skipped;
	skipped = 0;
	last_ns = now;
	pthread_mutex_unlock(&mu);
	size_t n = strcspn(detail, "\n");
	if(sk) chat_rest__log("db: %s: %.*s (%u similar suppressed)", what, (int)n, detail, sk);
	else chat_rest__log("db: %s: %.*s", what, (int)n, detail);
}

static void gate_close(struct chat_rest *r, const char *what, const char *detail)
{
	atomic_store(&gate_ns, chat_mono_ns() + CHAT_DB_RETRY_NS);
	atomic_fetch_add(&r->metrics.db_errors, 1);
	atomic_store(&r->metrics.db_up, 0);
	db_log(what, detail);
}

static bool slot_connect(struct chat_rest *r, struct dbslot *s)
{
	char err[256];
	int64_t now = chat_mono_ns();
	int64_t g = atomic_load(&gate_ns);
	if(g){
		if(now < g) return false;
		if(!atomic_compare_exchange_strong(&gate_ns, &g, now + CHAT_DB_PROBE_NS)) return false;
	}
	s->c = chat_pg_connect(r->cfg.db, err, sizeof err);
	if(!s->c){
		gate_close(r, "cannot connect", err);
		return false;
	}
	PGresult *res = PQexec(s->c, "SET application_name = 'chat-rest';"
			" SET statement_timeout = '10s';"
			/* Custom plans would re-plan all partitions on every call
			 * (~5 ms with 64); generic plans prune at executor start.
			 * Their cost estimate (every partition) crosses
			 * jit_above_cost, and JIT compiling a 1 ms lookup takes
			 * 200-300 ms: no JIT for these short statements. */
			" SET plan_cache_mode = force_generic_plan;"
			" SET jit = off;"
			/* Nor parallel workers: starting them costs ~10 ms for a
			 * page the index returns in 0.1 ms. */
			" SET max_parallel_workers_per_gather = 0;"
			" SET idle_in_transaction_session_timeout = '10s'");
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if(!ok) gate_close(r, "session setup failed", PQerrorMessage(s->c));
	PQclear(res);
	if(!ok){
		slot_drop(s);
		return false;
	}
	atomic_store(&gate_ns, 0);
	atomic_store(&r->metrics.db_up, 1);
	return true;
}

/* A failure that means "this connection is gone": reconnect, and retry. */
static bool lost(PGconn *c, const PGresult *res)
{
	if(chat_pg_conn_lost(c)) return true;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	/* Errors the server sends carry a SQLSTATE; libpq's own (socket
	 * closed, send failed) do not. */
	if(!state) return true;
	/* 08: connection exception; 57P0x: admin shutdown, crash shutdown,
	 * cannot connect now; 53300: too many connections. */
	return strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
		strcmp(state, "53300") == 0;
}

enum chat_db_rc chat_db__exec(struct chat_rest *r, enum chat_stmt st, int nparams,
		const char *const *params, PGresult **out)
{
	*out = NULL;
	struct dbslot *s = slot_get();
	if(!s) return CHAT_DB_ERROR;
	const struct stmt *d = &STMTS[st];
	if(nparams != d->nparams) return CHAT_DB_ERROR;
	for(int attempt = 0; attempt < 2; attempt++){
		if(!s->c && !slot_connect(r, s)) return CHAT_DB_DOWN;
		PGresult *res;
		if(!s->prepared[st]){
			res = PQprepare(s->c, d->name, d->sql, d->nparams, NULL);
			ExecStatusType ps = PQresultStatus(res);
			if(ps != PGRES_COMMAND_OK){
				atomic_fetch_add(&r->metrics.db_errors, 1);
				bool gone = lost(s->c, res);
				db_log(gone ? "connection lost" : "prepare failed",
						res ? PQresultErrorMessage(res) : PQerrorMessage(s->c));
				PQclear(res);
				if(gone){
					slot_drop(s);
					continue;
				}
				return CHAT_DB_ERROR;
			}
			PQclear(res);
			s->prepared[st] = true;
		}
		res = PQexecPrepared(s->c, d->name, nparams, params, NULL, NULL, 0);
		ExecStatusType es = PQresultStatus(res);
		if(es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK){
			atomic_store(&r->metrics.db_up, 1);
			*out = res;
			return CHAT_DB_OK;
		}
		atomic_fetch_add(&r->metrics.db_errors, 1);
		bool gone = lost(s->c, res);
		db_log(gone ? "connection lost" : d->name,
				res ? PQresultErrorMessage(res) : PQerrorMessage(s->c));
		PQclear(res);
		if(!gone) return CHAT_DB_ERROR;
		slot_drop(s);
		atomic_store(&r->metrics.db_up, 0);
	}
	return CHAT_DB_DOWN;
}

void chat_db__init(struct chat_rest *r)
{
	/* One early connection attempt, for the log only: the daemon starts
	 * and serves 503 while the database is away. */
	char err[256];
	PGconn *c = chat_pg_connect(r->cfg.db, err, sizeof err);
	if(c){
		atomic_store(&r->metrics.db_up, 1);
		PQfinish(c);
	}else{
		atomic_store(&r->metrics.db_up, 0);
		chat_rest__log("db: not reachable yet (%s); answering 503 until it is", err);
	}
}

void chat_db__print_sql(FILE *f)
{
	for(int i = 0; i < CHAT_Q__COUNT; i++){
		fprintf(f, "-- %s (%d parameters)\nPREPARE %s AS %s;\n\n", STMTS[i].name, STMTS[i].nparams,
				STMTS[i].name, STMTS[i].sql);
	}
}

void chat_db__shutdown(void)
{
	pthread_mutex_lock(&reg_mu);
	struct dbslot *s = reg_head;
	reg_head = NULL;
	pthread_mutex_unlock(&reg_mu);
	while(s){
		struct dbslot *n = s->next;
		slot_drop(s);
		free(s);
		s = n;
	}
	tls_slot = NULL;
}
