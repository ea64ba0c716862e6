/* SPDX-License-Identifier: EPL-2.0
 * store.c: the writer thread. It owns the PostgreSQL connection for inbox
 * writes and the spool; the broker thread only enqueues jobs and drains
 * results.
 *
 * DESIGN
 * Queues. Jobs (struct chat_job, private string copies) arrive on a
 * mutex+condvar FIFO bounded by queue_max; results (publishes, new
 * contacts, log lines) return on a second FIFO that the TICK drains after
 * the writer pokes the loopback wake-up connection (wake.c).
 *
 * Batches and order. The writer takes up to batch_max jobs in arrival
 * order and turns them into a plan: column arrays for one multi-row
 * INSERT ... SELECT FROM unnest(...) per table, plus the counter updates.
 * seq values are handed out in job order from the writer's own per-user
 * counters (gap-free by construction: a plan is applied whole or not at
 * all, and counters advance only after it is durable). gseq likewise per
 * group. PRIMARY KEY (user_id, seq) turns a clash with any other writer
 * into an error; the batch is then re-planned from counters re-read from
 * the database.
 *
 * Durable. A message counts as durable when its batch has committed, or,
 * while PostgreSQL is unreachable, when its plan was appended to the spool
 * and fsync'd. Only then are the inbox events published (recipients and
 * the sender's acknowledgement) - never before.
 *
 * Idempotency. (sender, cid) is UNIQUE in messages. Before planning, the
 * writer looks the batch's cids up (in a recent-cid cache, then in the
 * database) and answers a duplicate with the stored copy, to the sending
 * device only, inserting nothing.
 *
 * Spool and replay. While the database is down, plans are spooled (the
 * counters of every user were loaded at start, so seq can still be
 * assigned; a user or group whose counter is unknown gets "unavailable").
 * Receipts need database look-ups and are refused with "unavailable";
 * presence updates are dropped. When the database is back, spooled plans
 * are replayed in order with ON CONFLICT DO NOTHING (a replay after a crash
 * between commit and truncate inserts nothing twice) before any new batch,
 * then the spool is truncated.
 *
 * Failure modes. Lost connection mid-batch: roll back, spool the batch.
 * Statement error: re-plan from fresh counters up to 3 times, then answer
 * the batch's senders "unavailable" (nothing was acknowledged). Spool
 * write failure: "unavailable" too, logged loudly. Shutdown: the queue is
 * drained (committed or spooled) before the thread exits.
 */
#include "chat.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>

#include "pg.h"
#include "util.h"

/* ---- plan columns ------------------------------------------------------ */
enum {
	/* messages */
	M_USER, M_SEQ, M_KIND, M_ID, M_TS, M_FROM, M_TO, M_PEER, M_GROUP, M_GSEQ, M_CID, M_BODY, M_META,
	M_STATUS, M_IDS, M_GEVENT, M_GUSER, M_GBY,
	/* group_messages */
	G_GROUP, G_GSEQ, G_ID, G_TS, G_FROM, G_BODY, G_META,
	/* counters */
	CU_USER, CU_SEQ, CG_GROUP, CG_GSEQ,
	/* contacts */
	K_A, K_B,
	/* receipts */
	R_USER, R_MSG, R_STATUS, R_TS,
	/* read marks */
	RM_USER, RM_KIND, RM_CONV, RM_SEQ,
	/* outbox rows done */
	O_ID,
	/* presence */
	P_USER, P_STATUS, P_TS, P_LAST,
	NCOLS
};

struct plan {
	struct chat_pgarr col[NCOLS];
	int64_t outbox_done;        /* group_outbox ids up to this one are planned */
	bool outbox_failed;
	size_t nmsg, ngmsg, ncontacts, nreceipts, nmarks, noutbox, npresence;
	struct chat_hmap seq;       /* user -> int64 * next counter value (batch-local) */
	struct chat_hmap gseq;      /* group -> int64 * */
	struct chat_hmap cids;      /* "sender\0cid" -> char * rendered sender copy */
	struct chat_hmap receipts;  /* "reader\0id" -> (void*)(status 1|2), dedupe */
	struct chat_hmap marks;     /* "reader\0kind\0conv" -> int64 * */
	struct chat_hmap presence;  /* user -> struct chat_job * (last wins) */
	struct chat_hmap contacts;  /* pair -> (void*)1 new this batch */
	struct chat_res *res_head, *res_tail;
};

struct recent {
	struct recent *next;  /* FIFO for eviction */
	char *key;
	size_t klen;
	char *payload;        /* the sender's copy as published */
};

struct chat_store {
	struct chat_plugin *p;
	pthread_t thread;
	bool started;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct chat_job *head, *tail;
	size_t qlen;
	bool stop;
	bool outbox_ready;

	pthread_mutex_t rmu;
	struct chat_res *rhead, *rtail;

	/* writer thread only */
	PGconn *pg;
	bool db_up;
	int64_t next_connect_ns;
	int backoff_ms;
	bool counters_loaded;
	struct chat_spool *spool;
	struct chat_hmap counters;  /* user -> int64 * last seq */
	struct chat_hmap gcounters; /* group -> int64 * last gseq */
	struct chat_hmap known_contacts;
	struct chat_hmap recent;    /* "sender\0cid" -> struct recent */
	struct recent *recent_head, *recent_tail;
	size_t recent_n;
	int64_t next_stats_ns, next_outbox_ns;
	int outbox_min_age_s;
	bool recent_complete;       /* preloaded: every cid of the window is in recent */
	char last_sqlstate[6];
	long st_stored, st_batches, st_spooled, st_replayed, st_dups, st_db_errors;
	char prefix[256];
};

/* Recently stored (sender, cid) pairs: answers retries without a database
 * round trip, and while the database is down it is the only way to
 * recognise a retry. Copies are kept for small messages only; a pair known
 * without a copy is answered "unavailable" while spooling (never a second
 * copy). Preloaded at start with the last RECENT_WINDOW_MS of cids. */
#define RECENT_MAX 200000
#define RECENT_COPY_MAX 2048
#define RECENT_WINDOW_MS (24LL * 3600 * 1000)
static const char KNOWN_NO_COPY[] = "";

/* ---- small helpers ------------------------------------------------------ */

void chat_job__free(struct chat_job *j)
{
	if(!j) return;
	chat_send_free(&j->send);
	for(size_t i = 0; i < j->nmembers; i++) free(j->members[i]);
	free(j->members);
	free(j->receipt);
	free(j);
}

void chat_res__free(struct chat_res *r)
{
	if(!r) return;
	free(r->topic);
	free(r->clientid);
	free(r->payload);
	free(r);
}

static void push_results(struct chat_store *s, struct chat_res *head, struct chat_res *tail)
{
	if(!head) return;
	pthread_mutex_lock(&s->rmu);
	if(s->rtail) s->rtail->next = head;
	else s->rhead = head;
	s->rtail = tail;
	pthread_mutex_unlock(&s->rmu);
}

void chat_store__log(struct chat_plugin *p, int level, const char *fmt, ...)
{
	struct chat_store *s = p->store;
	struct chat_res *r = calloc(1, sizeof *r);
	if(!r || !s){
		free(r);
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	char buf[1024];
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	r->kind = CHAT_RES_LOG;
	r->level = level;
	r->payload = strdup(buf);
	if(!r->payload){
		free(r);
		return;
	}
	push_results(s, r, r);
}

static int64_t *counter_get(struct chat_hmap *m, const char *k)
{
	return chat_hmap_get(m, k);
}

static int counter_set(struct chat_hmap *m, const char *k, int64_t v)
{
	int64_t *c = chat_hmap_get(m, k);
	if(c){
		*c = v;
		return 0;
	}
	c = malloc(sizeof *c);
	if(!c) return -1;
	*c = v;
	if(chat_hmap_put(m, k, c, NULL)){
		free(c);
		return -1;
	}
	return 0;
}

static void free_map_values(struct chat_hmap *m)
{
	size_t it = 0;
	void *v;
	while(chat_hmap_next(m, &it, NULL, NULL, &v)) free(v);
	chat_hmap_free(m);
}

/* ---- database ---------------------------------------------------------- */

static void db_close(struct chat_store *s)
{
	if(s->pg) PQfinish(s->pg);
	s->pg = NULL;
	s->db_up = false;
}

static bool exec_ok(PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

static PGresult *q(struct chat_store *s, const char *sql, int n, const char *const *v)
{
	return PQexecParams(s->pg, sql, n, NULL, v, NULL, NULL, 0);
}

static bool simple(struct chat_store *s, const char *sql)
{
	PGresult *r = PQexec(s->pg, sql);
	bool ok = exec_ok(r);
	PQclear(r);
	return ok;
}

/* Run a query returning (key, counter) rows into map. ids: NULL for every
 * row, else a text[] literal bound as $1. */
static int load_into(struct chat_store *s, struct chat_hmap *map, const char *sql, const char *ids)
{
	PGresult *r = q(s, sql, ids ? 1 : 0, ids ? &ids : NULL);
	if(PQresultStatus(r) != PGRES_TUPLES_OK){
		PQclear(r);
		return -1;
	}
	for(int i = 0; i < PQntuples(r); i++){
		counter_set(map, PQgetvalue(r, i, 0), strtoll(PQgetvalue(r, i, 1), NULL, 10));
	}
	PQclear(r);
	return 0;
}

static int load_all_counters(struct chat_store *s)
{
	if(load_into(s, &s->counters, "SELECT user_id, last_seq FROM inbox_counters", NULL)
			|| load_into(s, &s->gcounters, "SELECT id, last_gseq FROM groups", NULL)) return -1;
	s->counters_loaded = true;
	return 0;
}

/* Re-read the counters of users and groups (after a clash or when unknown). */
static int load_counters(struct chat_store *s, struct chat_pgarr *users, struct chat_pgarr *groups)
{
	if(users->n && load_into(s, &s->counters,
				"SELECT user_id, last_seq FROM inbox_counters WHERE user_id = ANY($1::text[])",
				chat_pgarr_end(users))) return -1;
	if(groups->n && load_into(s, &s->gcounters, "SELECT id, last_gseq FROM groups WHERE id = ANY($1::text[])",
				chat_pgarr_end(groups))) return -1;
	return 0;
}

/* The statements of a plan, in order. Each takes ncols consecutive plan
 * columns starting at col and runs when counts[when] is non-zero. */
static const struct plan_stmt {
	int when;
	int col;
	int ncols;
	bool replay_skips;      /* ON CONFLICT DO NOTHING on replay */
	const char *what;
	const char *sql;
} PLAN_STMTS[] = {
	{0, M_USER, 18, true, "insert messages",
		"INSERT INTO messages (user_id, seq, kind, id, ts, from_user, to_user, peer, group_id, gseq, cid, body, "
		"meta, status, ids, gevent, guser, gby) "
		"SELECT u, s, k, i, t, f, tt, pr, g, gs, c, b, m, st, ids::text[], ge, gu, gb FROM unnest("
		"$1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[], "
		"$9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], "
		"$17::text[], $18::text[]) AS x(u, s, k, i, t, f, tt, pr, g, gs, c, b, m, st, ids, ge, gu, gb)"},
	{1, G_GROUP, 7, true, "insert group messages",
		"INSERT INTO group_messages (group_id, gseq, id, ts, from_user, body, meta) "
		"SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[])"},
	{0, CU_USER, 2, false, "advance seq counters",
		"UPDATE inbox_counters c SET last_seq = GREATEST(c.last_seq, x.s) "
		"FROM unnest($1::text[], $2::bigint[]) AS x(u, s) WHERE c.user_id = x.u"},
	{1, CG_GROUP, 2, false, "advance gseq counters",
		"UPDATE groups g SET last_gseq = GREATEST(g.last_gseq, x.s) "
		"FROM unnest($1::text[], $2::bigint[]) AS x(id, s) WHERE g.id = x.id"},
	{2, K_A, 2, false, "insert contacts",
		"INSERT INTO contacts (user_id, peer) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"},
	{3, R_USER, 4, false, "upsert receipts",
		"INSERT INTO receipts (user_id, msg_id, status, ts) "
		"SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) "
		"ON CONFLICT (user_id, msg_id) DO UPDATE SET "
		"status = CASE WHEN receipts.status = 'read' THEN 'read' ELSE EXCLUDED.status END, ts = EXCLUDED.ts"},
	{4, RM_USER, 4, false, "upsert read marks",
		"INSERT INTO read_marks (user_id, kind, conv, read_seq) "
		"SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) "
		"ON CONFLICT (user_id, kind, conv) DO UPDATE SET read_seq = GREATEST(read_marks.read_seq, EXCLUDED.read_seq)"},
	{5, O_ID, 1, false, "delete group outbox rows",
		"DELETE FROM group_outbox WHERE id = ANY($1::bigint[])"},
	{6, P_USER, 4, false, "upsert presence",
		"INSERT INTO presence (user_id, status, ts, last_seen) "
		"SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) "
		"ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status, ts = EXCLUDED.ts, last_seen = EXCLUDED.last_seen"},
};

/* Apply one plan's statements inside the caller's transaction. replay:
 * rows already present are skipped (spool replay is idempotent). */
static bool plan_exec(struct chat_store *s, char *const *c, const size_t *counts, bool replay)
{
	for(size_t i = 0; i < sizeof PLAN_STMTS / sizeof PLAN_STMTS[0]; i++){
		const struct plan_stmt *st = &PLAN_STMTS[i];
		if(!counts[st->when]) continue;
		char sql[2048];
		snprintf(sql, sizeof sql, "%s%s", st->sql, replay && st->replay_skips ? " ON CONFLICT DO NOTHING" : "");
		PGresult *r = q(s, sql, st->ncols, (const char *const *)&c[st->col]);
		bool ok = exec_ok(r);
		if(!ok){
			const char *st5 = PQresultErrorField(r, PG_DIAG_SQLSTATE);
			snprintf(s->last_sqlstate, sizeof s->last_sqlstate, "%s", st5 ? st5 : "");
		}
		if(!ok && !chat_pg_conn_lost(s->pg)){
			chat_store__log(s->p, MOSQ_LOG_WARNING, "chat: store: %s: %s", st->what, PQresultErrorMessage(r));
		}
		PQclear(r);
		if(!ok) return false;
	}
	return true;
}

/* ---- plans -------------------------------------------------------------- */

static void plan_init(struct plan *pl)
{
	memset(pl, 0, sizeof *pl);
	chat_hmap_init(&pl->seq);
	chat_hmap_init(&pl->gseq);
	chat_hmap_init(&pl->cids);
	chat_hmap_init(&pl->receipts);
	chat_hmap_init(&pl->marks);
	chat_hmap_init(&pl->presence);
	chat_hmap_init(&pl->contacts);
}

static void plan_free(struct plan *pl)
{
	for(int i = 0; i < NCOLS; i++) chat_pgarr_free(&pl->col[i]);
	free_map_values(&pl->seq);
	free_map_values(&pl->gseq);
	free_map_values(&pl->cids);
	chat_hmap_free(&pl->receipts);
	free_map_values(&pl->marks);
	chat_hmap_free(&pl->presence);
	chat_hmap_free(&pl->contacts);
	struct chat_res *r = pl->res_head;
	while(r){
		struct chat_res *n = r->next;
		chat_res__free(r);
		r = n;
	}
	pl->res_head = pl->res_tail = NULL;
}

static void plan_res(struct plan *pl, struct chat_res *r)
{
	if(!r) return;
	if(pl->res_tail) pl->res_tail->next = r;
	else pl->res_head = r;
	pl->res_tail = r;
}

static struct chat_res *res_publish(const char *topic, const char *clientid, char *payload, uint8_t qos)
{
	struct chat_res *r = calloc(1, sizeof *r);
	if(!r || !payload){
		free(r);
		free(payload);
		return NULL;
	}
	r->kind = CHAT_RES_PUBLISH;
	r->topic = strdup(topic);
	r->clientid = clientid && *clientid ? strdup(clientid) : NULL;
	r->payload = payload;
	r->len = strlen(payload);
	r->qos = qos;
	if(!r->topic || (clientid && *clientid && !r->clientid)){
		chat_res__free(r);
		return NULL;
	}
	return r;
}

static void inbox_topic(const struct chat_store *s, const char *user, char *buf, size_t len)
{
	snprintf(buf, len, "%s/inbox/%s", s->prefix, user);
}

static void plan_error(struct chat_store *s, struct plan *pl, const struct chat_job *j, enum chat_err code,
		const char *reason)
{
	char topic[512];
	inbox_topic(s, j->from, topic, sizeof topic);
	plan_res(pl, res_publish(topic, j->device, chat_error_render(code, j->send.cid, reason), 1));
}

/* Next seq for user in this plan, or -1 when the counter is unknown. */
static int64_t next_seq(struct chat_store *s, struct plan *pl, const char *user)
{
	int64_t *c = counter_get(&pl->seq, user);
	if(!c){
		int64_t *base = counter_get(&s->counters, user);
		if(!base) return -1;
		if(counter_set(&pl->seq, user, *base)) return -1;
		c = counter_get(&pl->seq, user);
	}
	return ++*c;
}

static int64_t next_gseq(struct chat_store *s, struct plan *pl, const char *group)
{
	int64_t *c = counter_get(&pl->gseq, group);
	if(!c){
		int64_t *base = counter_get(&s->gcounters, group);
		if(!base) return -1;
		if(counter_set(&pl->gseq, group, *base)) return -1;
		c = counter_get(&pl->gseq, group);
	}
	return ++*c;
}

/* One inbox row: every column, NULL where the kind has none. */
struct row {
	const char *user;
	int64_t seq;
	const char *kind;
	int64_t id;
	int64_t ts;
	const char *from, *to, *peer, *group;
	int64_t gseq;
	const char *cid, *body, *meta, *status, *ids, *gevent, *guser, *gby;
};

static int add_row(struct plan *pl, const struct row *r)
{
	struct chat_pgarr *c = pl->col;
	int e = 0;
	e |= chat_pgarr_str(&c[M_USER], r->user);
	e |= chat_pgarr_i64(&c[M_SEQ], r->seq);
	e |= chat_pgarr_str(&c[M_KIND], r->kind);
	e |= r->id ? chat_pgarr_i64(&c[M_ID], r->id) : chat_pgarr_null(&c[M_ID]);
	e |= chat_pgarr_i64(&c[M_TS], r->ts);
	e |= chat_pgarr_str(&c[M_FROM], r->from);
	e |= chat_pgarr_str(&c[M_TO], r->to);
	e |= chat_pgarr_str(&c[M_PEER], r->peer);
	e |= chat_pgarr_str(&c[M_GROUP], r->group);
	e |= r->gseq ? chat_pgarr_i64(&c[M_GSEQ], r->gseq) : chat_pgarr_null(&c[M_GSEQ]);
	e |= chat_pgarr_str(&c[M_CID], r->cid);
	e |= chat_pgarr_str(&c[M_BODY], r->body);
	e |= chat_pgarr_str(&c[M_META], r->meta);
	e |= chat_pgarr_str(&c[M_STATUS], r->status);
	e |= chat_pgarr_str(&c[M_IDS], r->ids);
	e |= chat_pgarr_str(&c[M_GEVENT], r->gevent);
	e |= chat_pgarr_str(&c[M_GUSER], r->guser);
	e |= chat_pgarr_str(&c[M_GBY], r->gby);
	pl->nmsg++;
	return e ? -1 : 0;
}

static void note_contact(struct chat_store *s, struct plan *pl, const char *a, const char *b)
{
	char key[2 * (CHAT_ID_MAX + 1)];
	if(strcmp(a, b) == 0) return;
	size_t kl = chat_pair_key(key, a, b);
	if(chat_hmap_getn(&s->known_contacts, key, kl) || chat_hmap_getn(&pl->contacts, key, kl)) return;
	chat_hmap_putn(&pl->contacts, key, kl, (void *)1, NULL);
	chat_pgarr_str(&pl->col[K_A], a);
	chat_pgarr_str(&pl->col[K_B], b);
	chat_pgarr_str(&pl->col[K_A], b);
	chat_pgarr_str(&pl->col[K_B], a);
	pl->ncontacts += 2;
	struct chat_res *r = calloc(1, sizeof *r);
	if(r){
		r->kind = CHAT_RES_CONTACT;
		snprintf(r->a, sizeof r->a, "%s", a);
		snprintf(r->b, sizeof r->b, "%s", b);
		plan_res(pl, r);
	}
}

/* Publish an event to a user's inbox (all devices). */
static void plan_event(struct chat_store *s, struct plan *pl, const char *user, const struct chat_event *ev)
{
	char topic[512];
	inbox_topic(s, user, topic, sizeof topic);
	plan_res(pl, res_publish(topic, NULL, chat_event_render(ev), 1));
}

/* A stored message seen again: the sending device gets the stored copy. */
static bool plan_duplicate(struct chat_store *s, struct plan *pl, const struct chat_job *j, const char *stored)
{
	if(stored == KNOWN_NO_COPY){
		/* a retry of a stored message we cannot show while spooling */
		plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "this message is already stored; retry when the store is back");
		return true;
	}
	char topic[512];
	inbox_topic(s, j->from, topic, sizeof topic);
	char *copy = strdup(stored);
	plan_res(pl, res_publish(topic, j->device, copy, 1));
	s->st_dups++;
	return true;
}

static const char *cid_lookup(struct chat_store *s, struct plan *pl, const struct chat_job *j)
{
	if(!j->send.cid) return NULL;
	char key[CHAT_ID_MAX + 1 + CHAT_CID_MAX + 1];
	size_t kl = chat_pair_key(key, j->from, j->send.cid);
	const char *v = chat_hmap_getn(&pl->cids, key, kl);
	if(v) return v;
	struct recent *r = chat_hmap_getn(&s->recent, key, kl);
	if(!r) return NULL;
	if(r->payload) return r->payload;
	/* with the database up, dedupe_db has already looked it up */
	return s->db_up ? NULL : KNOWN_NO_COPY;
}

static void cid_remember(struct plan *pl, const struct chat_job *j, const struct chat_event *sender_copy)
{
	if(!j->send.cid) return;
	char key[CHAT_ID_MAX + 1 + CHAT_CID_MAX + 1];
	size_t kl = chat_pair_key(key, j->from, j->send.cid);
	char *v = chat_event_render(sender_copy);
	void *old = NULL;
	if(v && chat_hmap_putn(&pl->cids, key, kl, v, &old) == 0){
		free(old);
	}else{
		free(v);
	}
}

static void plan_dm(struct chat_store *s, struct plan *pl, struct chat_job *j)
{
	const char *dup = cid_lookup(s, pl, j);
	if(dup){
		plan_duplicate(s, pl, j, dup);
		return;
	}
	bool self = strcmp(j->from, j->to) == 0;
	int64_t *cs = counter_get(&s->counters, j->from);
	int64_t *cp = counter_get(&s->counters, j->to);
	if(!cp && !counter_get(&pl->seq, j->to) && s->db_up){
		/* deleted since the broker's last directory snapshot */
		plan_error(s, pl, j, CHAT_E_UNKNOWN_RECIPIENT, "no such user");
		return;
	}
	if((!cs && !counter_get(&pl->seq, j->from)) || (!cp && !counter_get(&pl->seq, j->to))){
		plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "message store unavailable for this user, try again");
		return;
	}
	int64_t seq_peer = self ? 0 : next_seq(s, pl, j->to);
	int64_t seq_from = next_seq(s, pl, j->from);
	struct chat_event ev = {
		.kind = CHAT_EV_MSG, .ts = j->ts, .id = j->id, .from = j->from, .to = j->to,
		.body = j->send.body, .meta = j->send.meta,
	};
	if(!self){
		struct row rp = {.user = j->to, .seq = seq_peer, .kind = "msg", .id = j->id, .ts = j->ts,
			.from = j->from, .to = j->to, .peer = j->from, .body = j->send.body, .meta = j->send.meta};
		add_row(pl, &rp);
		ev.seq = seq_peer;
		plan_event(s, pl, j->to, &ev);
		note_contact(s, pl, j->from, j->to);
	}
	struct row rs = {.user = j->from, .seq = seq_from, .kind = "msg", .id = j->id, .ts = j->ts,
		.from = j->from, .to = j->to, .peer = j->to, .cid = j->send.cid, .body = j->send.body,
		.meta = j->send.meta};
	add_row(pl, &rs);
	ev.seq = seq_from;
	ev.cid = j->send.cid;
	plan_event(s, pl, j->from, &ev);
	cid_remember(pl, j, &ev);
}

static void plan_group(struct chat_store *s, struct plan *pl, struct chat_job *j)
{
	const char *dup = cid_lookup(s, pl, j);
	if(dup){
		plan_duplicate(s, pl, j, dup);
		return;
	}
	if(!counter_get(&pl->gseq, j->group) && !counter_get(&s->gcounters, j->group)){
		plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "message store unavailable for this group, try again");
		return;
	}
	for(size_t i = 0; i < j->nmembers; i++){
		if(!counter_get(&pl->seq, j->members[i]) && !counter_get(&s->counters, j->members[i])){
			plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "message store unavailable for a member, try again");
			return;
		}
	}
	int64_t gseq = next_gseq(s, pl, j->group);
	struct chat_pgarr *c = pl->col;
	chat_pgarr_str(&c[G_GROUP], j->group);
	chat_pgarr_i64(&c[G_GSEQ], gseq);
	chat_pgarr_i64(&c[G_ID], j->id);
	chat_pgarr_i64(&c[G_TS], j->ts);
	chat_pgarr_str(&c[G_FROM], j->from);
	chat_pgarr_str(&c[G_BODY], j->send.body);
	chat_pgarr_str(&c[G_META], j->send.meta);
	pl->ngmsg++;

	struct chat_event ev = {
		.kind = CHAT_EV_MSG, .ts = j->ts, .id = j->id, .from = j->from, .group = j->group, .gseq = gseq,
		.body = j->send.body, .meta = j->send.meta,
	};
	for(size_t i = 0; i < j->nmembers; i++){
		const char *m = j->members[i];
		bool sender = strcmp(m, j->from) == 0;
		int64_t seq = next_seq(s, pl, m);
		struct row r = {.user = m, .seq = seq, .kind = "msg", .id = j->id, .ts = j->ts, .from = j->from,
			.group = j->group, .gseq = gseq, .cid = sender ? j->send.cid : NULL};
		add_row(pl, &r);
		ev.seq = seq;
		ev.cid = sender ? j->send.cid : NULL;
		plan_event(s, pl, m, &ev);
		if(sender) cid_remember(pl, j, &ev);
	}
}

/* Receipts need the reader's rows: database only. */
static void plan_receipt(struct chat_store *s, struct plan *pl, struct chat_job *j)
{
	if(!s->db_up){
		plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "receipts are unavailable while the store is down");
		return;
	}
	struct chat_pgarr ids = {0};
	for(size_t i = 0; i < j->receipt->n; i++) chat_pgarr_i64(&ids, j->receipt->ids[i]);
	const char *v[3] = {j->from, j->to, chat_pgarr_end(&ids)};
	PGresult *r = q(s, "SELECT id, seq, group_id FROM messages WHERE user_id = $1 AND kind = 'msg' "
			"AND from_user = $2 AND from_user <> user_id AND id = ANY($3::bigint[]) ORDER BY seq", 3, v);
	chat_pgarr_free(&ids);
	if(PQresultStatus(r) != PGRES_TUPLES_OK){
		PQclear(r);
		plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "receipt could not be checked, try again");
		return;
	}
	int n = PQntuples(r);
	if(n == 0){
		PQclear(r);
		plan_error(s, pl, j, CHAT_E_BAD_PAYLOAD, "no message from this user with these ids was received");
		return;
	}
	if(!counter_get(&pl->seq, j->to) && !counter_get(&s->counters, j->to)){
		PQclear(r);
		plan_error(s, pl, j, CHAT_E_UNAVAILABLE, "message store unavailable for this user, try again");
		return;
	}
	const char *status = j->receipt->read ? "read" : "delivered";
	const char **idv = calloc((size_t)n, sizeof *idv);
	struct chat_pgarr idlit = {0};
	for(int i = 0; i < n; i++){
		const char *id = PQgetvalue(r, i, 0);
		int64_t seq = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		bool grp = !PQgetisnull(r, i, 2);
		if(idv) idv[i] = id;
		chat_pgarr_str(&idlit, id);
		/* receipts: strongest status per (reader, id) within the batch */
		char key[CHAT_ID_MAX + 1 + 24];
		size_t kl = chat_pair_key(key, j->from, id);
		uintptr_t prev = (uintptr_t)chat_hmap_getn(&pl->receipts, key, kl);
		uintptr_t want = j->receipt->read ? 2 : 1;
		if(prev < want) chat_hmap_putn(&pl->receipts, key, kl, (void *)want, NULL);
		if(j->receipt->read){
			char mkey[3 * (CHAT_ID_MAX + 1)];
			int ml = snprintf(mkey, sizeof mkey, "%s%c%s%c%s", j->from, 0, grp ? "group" : "dm", 0,
					grp ? PQgetvalue(r, i, 2) : j->to);
			int64_t *mv = chat_hmap_getn(&pl->marks, mkey, (size_t)ml);
			if(!mv){
				mv = malloc(sizeof *mv);
				if(mv){
					*mv = seq;
					if(chat_hmap_putn(&pl->marks, mkey, (size_t)ml, mv, NULL)){
						free(mv);
					}
				}
			}else if(*mv < seq){
				*mv = seq;
			}
		}
	}
	int64_t seq = next_seq(s, pl, j->to);
	struct row row = {.user = j->to, .seq = seq, .kind = "receipt", .ts = j->ts, .from = j->from,
		.status = status, .ids = chat_pgarr_end(&idlit)};
	add_row(pl, &row);
	struct chat_event ev = {.kind = CHAT_EV_RECEIPT, .seq = seq, .ts = j->ts, .from = j->from,
		.read = j->receipt->read, .ids = idv, .nids = idv ? (size_t)n : 0};
	plan_event(s, pl, j->to, &ev);
	chat_pgarr_free(&idlit);
	free(idv);
	PQclear(r);
}

static void plan_presence(struct chat_store *s, struct plan *pl, struct chat_job *j)
{
	(void)s;
	chat_hmap_put(&pl->presence, j->from, j, NULL); /* last wins */
}

/* Turn group_outbox rows with ids up to upto into group events, inside the
 * batch transaction (the DELETE of those rows commits with the events).
 * min_age_s > 0: a periodic catch-up that leaves fresh rows to their
 * markers. */
static bool plan_outbox(struct chat_store *s, struct plan *pl, int64_t upto, int min_age_s)
{
	char from[24], to[24], age[16];
	snprintf(from, sizeof from, "%lld", (long long)pl->outbox_done);
	snprintf(to, sizeof to, "%lld", (long long)upto);
	snprintf(age, sizeof age, "%d", min_age_s);
	const char *pv[3] = {from, to, age};
	PGresult *r = q(s, "SELECT id, group_id, event, user_id, by_user, recipients, ts FROM group_outbox "
			"WHERE id > $1::bigint AND id <= $2::bigint "
			"AND created_at <= now() - make_interval(secs => $3::integer) "
			"ORDER BY id LIMIT 10000 FOR UPDATE", 3, pv);
	if(PQresultStatus(r) != PGRES_TUPLES_OK){
		PQclear(r);
		return false;
	}
	int n = PQntuples(r);
	if(n){
		/* recipients' counters may be unknown (new users): load them */
		struct chat_pgarr users = {0}, none = {0};
		for(int i = 0; i < n; i++){
			char **rc = NULL;
			long k = chat_pgarr_parse(PQgetvalue(r, i, 5), &rc);
			for(long x = 0; x < k; x++){
				if(rc[x] && !counter_get(&s->counters, rc[x])) chat_pgarr_str(&users, rc[x]);
			}
			chat_pgarr_parsed_free(rc, k);
		}
		if(users.n) load_counters(s, &users, &none);
		chat_pgarr_free(&users);
		chat_pgarr_free(&none);
	}
	for(int i = 0; i < n; i++){
		const char *gid = PQgetvalue(r, i, 1);
		const char *event = PQgetvalue(r, i, 2);
		const char *user = PQgetvalue(r, i, 3);
		const char *by = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4);
		int64_t ts = strtoll(PQgetvalue(r, i, 6), NULL, 10);
		char **rc = NULL;
		long k = chat_pgarr_parse(PQgetvalue(r, i, 5), &rc);
		for(long x = 0; x < k; x++){
			if(!rc[x] || (!counter_get(&pl->seq, rc[x]) && !counter_get(&s->counters, rc[x]))) continue;
			int64_t seq = next_seq(s, pl, rc[x]);
			struct row row = {.user = rc[x], .seq = seq, .kind = "group", .ts = ts, .group = gid,
				.gevent = event, .guser = user, .gby = by};
			add_row(pl, &row);
			struct chat_event ev = {.kind = CHAT_EV_GROUP, .seq = seq, .ts = ts, .group = gid, .gevent = event,
				.guser = user, .gby = by};
			plan_event(s, pl, rc[x], &ev);
		}
		chat_pgarr_parsed_free(rc, k);
		chat_pgarr_str(&pl->col[O_ID], PQgetvalue(r, i, 0));
		pl->noutbox++;
		int64_t id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		if(id > pl->outbox_done) pl->outbox_done = id;
	}
	PQclear(r);
	return true;
}

/* Fill the counter and side-table columns from the plan's maps. */
static void plan_finish(struct plan *pl)
{
	size_t it = 0;
	const char *k;
	size_t kl;
	void *v;
	while(chat_hmap_next(&pl->seq, &it, &k, NULL, &v)){
		chat_pgarr_str(&pl->col[CU_USER], k);
		chat_pgarr_i64(&pl->col[CU_SEQ], *(int64_t *)v);
	}
	it = 0;
	while(chat_hmap_next(&pl->gseq, &it, &k, NULL, &v)){
		chat_pgarr_str(&pl->col[CG_GROUP], k);
		chat_pgarr_i64(&pl->col[CG_GSEQ], *(int64_t *)v);
	}
	it = 0;
	while(chat_hmap_next(&pl->receipts, &it, &k, &kl, &v)){
		chat_pgarr_str(&pl->col[R_USER], k);
		chat_pgarr_str(&pl->col[R_MSG], k + strlen(k) + 1);
		chat_pgarr_str(&pl->col[R_STATUS], (uintptr_t)v == 2 ? "read" : "delivered");
		chat_pgarr_i64(&pl->col[R_TS], chat_now_ms());
		pl->nreceipts++;
	}
	it = 0;
	while(chat_hmap_next(&pl->marks, &it, &k, &kl, &v)){
		const char *kind = k + strlen(k) + 1;
		const char *conv = kind + strlen(kind) + 1;
		chat_pgarr_str(&pl->col[RM_USER], k);
		chat_pgarr_str(&pl->col[RM_KIND], kind);
		chat_pgarr_str(&pl->col[RM_CONV], conv);
		chat_pgarr_i64(&pl->col[RM_SEQ], *(int64_t *)v);
		pl->nmarks++;
	}
	it = 0;
	while(chat_hmap_next(&pl->presence, &it, &k, NULL, &v)){
		const struct chat_job *j = v;
		chat_pgarr_str(&pl->col[P_USER], k);
		chat_pgarr_str(&pl->col[P_STATUS], j->online ? "online" : "offline");
		chat_pgarr_i64(&pl->col[P_TS], j->ts);
		if(j->last_seen > 0) chat_pgarr_i64(&pl->col[P_LAST], j->last_seen);
		else chat_pgarr_null(&pl->col[P_LAST]);
		pl->npresence++;
	}
	for(int i = 0; i < NCOLS; i++) chat_pgarr_end(&pl->col[i]);
}

static void plan_counts(const struct plan *pl, size_t counts[7])
{
	counts[0] = pl->nmsg;
	counts[1] = pl->ngmsg;
	counts[2] = pl->ncontacts;
	counts[3] = pl->nreceipts;
	counts[4] = pl->nmarks;
	counts[5] = pl->noutbox;
	counts[6] = pl->npresence;
}

static void plan_strings(struct plan *pl, char *v[NCOLS], size_t lens[NCOLS])
{
	for(int i = 0; i < NCOLS; i++){
		v[i] = pl->col[i].b.data;
		lens[i] = pl->col[i].b.len;
	}
}

static void recent_add(struct chat_store *s, const char *k, size_t kl, const char *copy)
{
	struct recent *r = chat_hmap_getn(&s->recent, k, kl);
	if(r){
		if(!r->payload && copy && strlen(copy) <= RECENT_COPY_MAX) r->payload = strdup(copy);
		return;
	}
	r = calloc(1, sizeof *r);
	if(!r) return;
	r->key = malloc(kl);
	r->payload = copy && strlen(copy) <= RECENT_COPY_MAX ? strdup(copy) : NULL;
	if(!r->key || chat_hmap_putn(&s->recent, k, kl, r, NULL)){
		free(r->key);
		free(r->payload);
		free(r);
		return;
	}
	memcpy(r->key, k, kl);
	r->klen = kl;
	if(s->recent_tail) s->recent_tail->next = r;
	else s->recent_head = r;
	s->recent_tail = r;
	if(++s->recent_n > RECENT_MAX){
		struct recent *old = s->recent_head;
		s->recent_head = old->next;
		if(!s->recent_head) s->recent_tail = NULL;
		chat_hmap_deln(&s->recent, old->key, old->klen);
		free(old->key);
		free(old->payload);
		free(old);
		s->recent_n--;
	}
}

/* Start-up: the cids of the last day, so that a retry of a message stored
 * before a restart is recognised even while the database is down. */
static void recent_preload(struct chat_store *s)
{
	char since[24];
	snprintf(since, sizeof since, "%lld", (long long)(chat_now_ms() - RECENT_WINDOW_MS));
	char lim[24];
	snprintf(lim, sizeof lim, "%d", RECENT_MAX);
	const char *v[2] = {since, lim};
	PGresult *r = q(s, "SELECT user_id, cid FROM messages WHERE cid IS NOT NULL AND ts > $1::bigint "
			"ORDER BY ts LIMIT $2::integer", 2, v);
	if(PQresultStatus(r) == PGRES_TUPLES_OK){
		s->recent_complete = PQntuples(r) < RECENT_MAX;
		for(int i = 0; i < PQntuples(r); i++){
			char key[CHAT_ID_MAX + 1 + CHAT_CID_MAX + 1];
			size_t kl = chat_pair_key(key, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
			recent_add(s, key, kl, NULL);
		}
	}
	PQclear(r);
}

/* After a plan is durable: advance counters, remember cids and contacts. */
static void plan_apply(struct chat_store *s, struct plan *pl)
{
	size_t it = 0;
	const char *k;
	size_t kl;
	void *v;
	while(chat_hmap_next(&pl->seq, &it, &k, NULL, &v)) counter_set(&s->counters, k, *(int64_t *)v);
	it = 0;
	while(chat_hmap_next(&pl->gseq, &it, &k, NULL, &v)) counter_set(&s->gcounters, k, *(int64_t *)v);
	it = 0;
	while(chat_hmap_next(&pl->contacts, &it, &k, &kl, NULL)){
		chat_hmap_putn(&s->known_contacts, k, kl, (void *)1, NULL);
	}
	it = 0;
	while(chat_hmap_next(&pl->cids, &it, &k, &kl, &v)) recent_add(s, k, kl, v);
	s->st_stored += (long)pl->nmsg;
	s->st_batches++;
	push_results(s, pl->res_head, pl->res_tail);
	pl->res_head = pl->res_tail = NULL;
}

/* ---- the batch ---------------------------------------------------------- */

/* Collect users/groups the batch needs whose counters are unknown. */
static void unknown_counters(struct chat_store *s, struct chat_job *jobs, struct chat_pgarr *users,
		struct chat_pgarr *groups)
{
	for(struct chat_job *j = jobs; j; j = j->next){
		if(j->kind == CHAT_JOB_DM || j->kind == CHAT_JOB_RECEIPT){
			if(!counter_get(&s->counters, j->from)) chat_pgarr_str(users, j->from);
			if(!counter_get(&s->counters, j->to)) chat_pgarr_str(users, j->to);
		}else if(j->kind == CHAT_JOB_GROUP){
			if(!counter_get(&s->gcounters, j->group)) chat_pgarr_str(groups, j->group);
			for(size_t i = 0; i < j->nmembers; i++){
				if(!counter_get(&s->counters, j->members[i])) chat_pgarr_str(users, j->members[i]);
			}
		}
	}
}

/* Look the batch's cids up in the database: a hit becomes a plan cid entry
 * holding the stored sender copy, so planning answers it as a duplicate. */
/* force: look every cid up. Otherwise, while the recent cache holds every
 * cid of its window, a cid missing from it is new and costs no query: a
 * retry from beyond the window (or evicted) then fails the INSERT on
 * UNIQUE (user_id, cid), and batch_db re-plans with force. */
static bool dedupe_db(struct chat_store *s, struct plan *pl, struct chat_job *jobs, bool force)
{
	struct chat_pgarr u = {0}, c = {0};
	struct chat_hmap want;
	chat_hmap_init(&want);
	for(struct chat_job *j = jobs; j; j = j->next){
		if((j->kind == CHAT_JOB_DM || j->kind == CHAT_JOB_GROUP) && j->send.cid){
			char key[CHAT_ID_MAX + 1 + CHAT_CID_MAX + 1];
			size_t kl = chat_pair_key(key, j->from, j->send.cid);
			struct recent *rc = chat_hmap_getn(&s->recent, key, kl);
			if((rc && rc->payload) || chat_hmap_getn(&want, key, kl)) continue;
			if(!rc && s->recent_complete && !force) continue; /* new, by the cache's word */
			chat_hmap_putn(&want, key, kl, (void *)1, NULL);
			chat_pgarr_str(&u, j->from);
			chat_pgarr_str(&c, j->send.cid);
		}
	}
	bool ok = true;
	if(u.n){
		const char *v[2] = {chat_pgarr_end(&u), chat_pgarr_end(&c)};
		/* prepared in try_connect; group bodies only for the rare hits */
		PGresult *r = PQexecPrepared(s->pg, "chat_dedupe", 2, v, NULL, NULL, 0);
		ok = PQresultStatus(r) == PGRES_TUPLES_OK;
		for(int i = 0; ok && i < PQntuples(r); i++){
			char key[CHAT_ID_MAX + 1 + CHAT_CID_MAX + 1];
			size_t kl = chat_pair_key(key, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
			if(!chat_hmap_getn(&want, key, kl)) continue;
			struct chat_event ev = {
				.kind = CHAT_EV_MSG,
				.from = PQgetvalue(r, i, 0),
				.cid = PQgetvalue(r, i, 1),
				.id = strtoll(PQgetvalue(r, i, 2), NULL, 10),
				.seq = strtoll(PQgetvalue(r, i, 3), NULL, 10),
				.ts = strtoll(PQgetvalue(r, i, 4), NULL, 10),
				.to = PQgetisnull(r, i, 5) ? NULL : PQgetvalue(r, i, 5),
				.group = PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6),
				.gseq = PQgetisnull(r, i, 7) ? 0 : strtoll(PQgetvalue(r, i, 7), NULL, 10),
				.body = PQgetisnull(r, i, 8) ? NULL : PQgetvalue(r, i, 8),
				.meta = PQgetisnull(r, i, 9) ? NULL : PQgetvalue(r, i, 9),
			};
			PGresult *g = NULL;
			if(ev.group){
				const char *gv[2] = {ev.group, PQgetvalue(r, i, 7)};
				g = q(s, "SELECT body, meta FROM group_messages WHERE group_id = $1 AND gseq = $2::bigint", 2, gv);
				if(PQresultStatus(g) != PGRES_TUPLES_OK){
					PQclear(g);
					ok = false;
					break;
				}
				if(PQntuples(g) == 1){
					ev.body = PQgetvalue(g, 0, 0);
					ev.meta = PQgetisnull(g, 0, 1) ? NULL : PQgetvalue(g, 0, 1);
				}
			}
			char *payload = chat_event_render(&ev);
			PQclear(g);
			void *old = NULL;
			if(payload && chat_hmap_putn(&pl->cids, key, kl, payload, &old) == 0) free(old);
			else free(payload);
		}
		PQclear(r);
	}
	chat_hmap_free(&want);
	chat_pgarr_free(&u);
	chat_pgarr_free(&c);
	return ok;
}

static void plan_jobs(struct chat_store *s, struct plan *pl, struct chat_job *jobs)
{
	for(struct chat_job *j = jobs; j; j = j->next){
		switch(j->kind){
		case CHAT_JOB_DM: plan_dm(s, pl, j); break;
		case CHAT_JOB_GROUP: plan_group(s, pl, j); break;
		case CHAT_JOB_RECEIPT: plan_receipt(s, pl, j); break;
		case CHAT_JOB_PRESENCE: plan_presence(s, pl, j); break;
		case CHAT_JOB_OUTBOX:
			if(!j->outbox_upto) break;
			if(!s->db_up){
				/* spooling: chatctl cannot have written since; catch up later */
				pthread_mutex_lock(&s->mu);
				s->outbox_ready = true;
				pthread_mutex_unlock(&s->mu);
			}else if(j->outbox_upto > pl->outbox_done && !plan_outbox(s, pl, j->outbox_upto, 0)){
				pl->outbox_failed = true;
			}
			break;
		}
	}
}

static void fail_jobs(struct chat_store *s, struct chat_job *jobs, const char *reason)
{
	struct plan pl;
	plan_init(&pl);
	for(struct chat_job *j = jobs; j; j = j->next){
		if(j->kind == CHAT_JOB_DM || j->kind == CHAT_JOB_GROUP || j->kind == CHAT_JOB_RECEIPT){
			plan_error(s, &pl, j, CHAT_E_UNAVAILABLE, reason);
		}
	}
	push_results(s, pl.res_head, pl.res_tail);
	pl.res_head = pl.res_tail = NULL;
	plan_free(&pl);
}

static bool is_conn_error(struct chat_store *s)
{
	return chat_pg_conn_lost(s->pg);
}

/* Try the batch against the database. Returns 1 committed, 0 database
 * unreachable (caller spools), -1 failed for good. */
static int batch_db(struct chat_store *s, struct chat_job *jobs, bool outbox)
{
	bool lookup = false;
	for(int attempt = 0; attempt < 3; attempt++){
		struct plan pl;
		plan_init(&pl);
		s->last_sqlstate[0] = '\0';
		struct chat_pgarr users = {0}, groups = {0};
		bool ok = simple(s, "BEGIN");
		bool reload = false;
		for(struct chat_job *j = jobs; j; j = j->next) reload |= j->reload_counters;
		if(ok && reload){
			/* users or groups were deleted or re-created: the database's
			 * counters are the truth (they commit with every batch) */
			free_map_values(&s->counters);
			free_map_values(&s->gcounters);
			chat_hmap_init(&s->counters);
			chat_hmap_init(&s->gcounters);
			ok = load_all_counters(s) == 0;
		}
		if(ok){
			unknown_counters(s, jobs, &users, &groups);
			ok = load_counters(s, &users, &groups) == 0;
		}
		chat_pgarr_free(&users);
		chat_pgarr_free(&groups);
		if(ok) ok = dedupe_db(s, &pl, jobs, lookup);
		if(ok && outbox) ok = plan_outbox(s, &pl, INT64_MAX, s->outbox_min_age_s);
		if(ok){
			plan_jobs(s, &pl, jobs);
			ok = !pl.outbox_failed;
		}
		if(ok){
			plan_finish(&pl);
			size_t counts[7];
			plan_counts(&pl, counts);
			char *v[NCOLS];
			size_t lens[NCOLS];
			plan_strings(&pl, v, lens);
			ok = plan_exec(s, v, counts, false) && simple(s, "COMMIT");
		}
		if(ok){
			plan_apply(s, &pl);
			plan_free(&pl);
			return 1;
		}
		plan_free(&pl);
		s->st_db_errors++;
		if(is_conn_error(s)){
			chat_store__log(s->p, MOSQ_LOG_WARNING, "chat: store: postgres unreachable (%s), spooling to %s",
					PQerrorMessage(s->pg), s->p->cfg.spool_dir);
			db_close(s);
			return 0;
		}
		char why[512];
		snprintf(why, sizeof why, "%s", PQerrorMessage(s->pg)); /* before ROLLBACK clears it */
		simple(s, "ROLLBACK");
		if(strcmp(s->last_sqlstate, "23505") == 0 && !lookup){
			/* a retried cid older than the cache (or another writer's seq):
			 * re-plan with every cid looked up and counters re-read */
			lookup = true;
			chat_store__log(s->p, MOSQ_LOG_INFO, "chat: store: unique clash, re-checking the batch against postgres");
		}else{
			chat_store__log(s->p, MOSQ_LOG_WARNING, "chat: store: batch failed (attempt %d): %s", attempt + 1, why);
		}
		/* a clash with another writer: forget counters, re-read, re-plan */
		free_map_values(&s->counters);
		free_map_values(&s->gcounters);
		chat_hmap_init(&s->counters);
		chat_hmap_init(&s->gcounters);
		if(load_all_counters(s)){
			if(is_conn_error(s)){
				db_close(s);
				return 0;
			}
		}
		struct timespec ts = {0, 20 * 1000000L * (attempt + 1)};
		nanosleep(&ts, NULL);
	}
	return -1;
}

static bool batch_spool(struct chat_store *s, struct chat_job *jobs)
{
	struct plan pl;
	plan_init(&pl);
	plan_jobs(s, &pl, jobs);
	chat_hmap_free(&pl.presence); /* presence is not spooled */
	chat_hmap_init(&pl.presence);
	plan_finish(&pl);
	size_t counts[7];
	plan_counts(&pl, counts);
	bool ok = true;
	if(counts[0] || counts[1]){
		char *v[NCOLS];
		size_t lens[NCOLS];
		plan_strings(&pl, v, lens);
		ok = s->spool && chat_spool__append(s->spool, (const char *const *)v, lens, NCOLS) == 0;
		if(ok) s->st_spooled++;
	}
	if(ok) plan_apply(s, &pl);
	plan_free(&pl);
	return ok;
}

/* Replay every spooled plan in order; true when the spool is empty. */
static bool replay(struct chat_store *s)
{
	size_t n = chat_spool__pending(s->spool);
	if(!n) return true;
	chat_store__log(s->p, MOSQ_LOG_NOTICE, "chat: store: postgres is back, replaying %zu spooled batches", n);
	for(size_t k = 0; k < n; k++){
		char **v = NULL;
		size_t nv = 0;
		int rc = chat_spool__read(s->spool, k, &v, &nv);
		if(rc == 1) break;
		if(rc < 0 || nv != NCOLS){
			chat_store__log(s->p, MOSQ_LOG_ERR, "chat: store: spool record %zu is corrupt, not replayed", k);
			if(v){
				for(size_t i = 0; i < nv; i++) free(v[i]);
				free(v);
			}
			continue;
		}
		/* counts only need to say which statements have rows */
		size_t counts[7] = {
			strcmp(v[M_USER], "{}") != 0, strcmp(v[G_GROUP], "{}") != 0, strcmp(v[K_A], "{}") != 0, 0, 0, 0, 0,
		};
		bool ok = simple(s, "BEGIN") && plan_exec(s, v, counts, true) && simple(s, "COMMIT");
		for(size_t i = 0; i < nv; i++) free(v[i]);
		free(v);
		if(!ok){
			s->st_db_errors++;
			if(is_conn_error(s)) db_close(s);
			else simple(s, "ROLLBACK");
			chat_store__log(s->p, MOSQ_LOG_WARNING, "chat: store: replay stopped at record %zu, will retry", k);
			return false;
		}
		s->st_replayed++;
	}
	if(chat_spool__truncate(s->spool)){
		chat_store__log(s->p, MOSQ_LOG_ERR, "chat: store: cannot truncate the spool: %s", strerror(errno));
		return false;
	}
	chat_store__log(s->p, MOSQ_LOG_NOTICE, "chat: store: spool replayed");
	return true;
}

static void try_connect(struct chat_store *s)
{
	if(s->db_up) return;
	int64_t now = chat_mono_ns();
	if(now < s->next_connect_ns) return;
	char err[512];
	s->pg = chat_pg_connect(s->p->cfg.db_conninfo, err, sizeof err);
	if(!s->pg){
		s->next_connect_ns = now + (int64_t)s->backoff_ms * 1000000;
		if(s->backoff_ms < 2000) s->backoff_ms *= 2;
		return;
	}
	s->backoff_ms = 100;
	s->db_up = true;
	/* Generic plans with run-time partition pruning: planning a statement
	 * over 64+ partitions per batch costs more than running it, and JIT
	 * compiling one costs up to a second. The cid look-up is prepared once
	 * per connection: one index probe per (sender, cid) in its partition. */
	PGresult *r = PQexec(s->pg, "SET jit = off; SET plan_cache_mode = force_generic_plan");
	PQclear(r);
	r = PQprepare(s->pg, "chat_dedupe",
			"SELECT m.user_id, m.cid, m.id, m.seq, m.ts, m.to_user, m.group_id, m.gseq, m.body, m.meta "
			"FROM unnest($1::text[], $2::text[]) AS x(u, c) "
			"CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.user_id = x.u AND m.cid = x.c OFFSET 0) m",
			2, NULL);
	bool prepared = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if(!prepared){
		chat_store__log(s->p, MOSQ_LOG_WARNING, "chat: store: prepare: %s", PQerrorMessage(s->pg));
		db_close(s);
		return;
	}
	/* replay first: counters loaded before it would miss the spooled seqs */
	if(!replay(s)){
		if(s->db_up) db_close(s);
		return;
	}
	if(!s->counters_loaded) recent_preload(s);
	if(!s->counters_loaded && load_all_counters(s)){
		chat_store__log(s->p, MOSQ_LOG_WARNING, "chat: store: cannot load counters: %s", PQerrorMessage(s->pg));
		db_close(s);
		return;
	}
	s->outbox_ready = true; /* catch up on membership events */
	chat_store__log(s->p, MOSQ_LOG_NOTICE, "chat: store: connected to postgres");
}

static void write_stats(struct chat_store *s, size_t qlen)
{
	if(!s->db_up) return;
	char vals[10][24];
	const char *names = "{messages_stored,batches,spooled_batches,replayed_batches,duplicates,db_errors,"
		"queue_length,connected_devices,received,errors,spool_pending}";
	long nums[11] = {s->st_stored, s->st_batches, s->st_spooled, s->st_replayed, s->st_dups, s->st_db_errors,
		(long)qlen, atomic_load(&s->p->st_connected), atomic_load(&s->p->st_received),
		atomic_load(&s->p->st_errors), (long)chat_spool__pending(s->spool)};
	struct chat_pgarr a = {0};
	for(int i = 0; i < 11; i++) chat_pgarr_i64(&a, nums[i]);
	(void)vals;
	const char *v[2] = {names, chat_pgarr_end(&a)};
	PGresult *r = q(s, "INSERT INTO plugin_stats (name, value, updated_at) "
			"SELECT n, v, now() FROM unnest($1::text[], $2::bigint[]) AS x(n, v) "
			"ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()", 2, v);
	if(!exec_ok(r) && is_conn_error(s)) db_close(s);
	PQclear(r);
	chat_pgarr_free(&a);
}

static void *writer_main(void *arg)
{
	struct chat_store *s = arg;
	struct chat_plugin *p = s->p;
	for(;;){
		try_connect(s);
		chat_wake__service(p->wake);

		pthread_mutex_lock(&s->mu);
		if(!s->head && !s->stop && !(s->outbox_ready && s->db_up)){
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 200 * 1000000L;
			if(ts.tv_nsec >= 1000000000L){
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&s->cv, &s->mu, &ts);
		}
		struct chat_job *jobs = NULL, **tail = &jobs;
		size_t n = 0;
		while(s->head && n < p->cfg.batch_max){
			struct chat_job *j = s->head;
			s->head = j->next;
			j->next = NULL;
			*tail = j;
			tail = &j->next;
			n++;
			s->qlen--;
		}
		if(!s->head) s->tail = NULL;
		bool stop = s->stop && !s->head;
		bool outbox = s->outbox_ready && s->db_up;
		if(outbox) s->outbox_ready = false;
		size_t qlen = s->qlen;
		pthread_mutex_unlock(&s->mu);

		int64_t now = chat_mono_ns();
		s->outbox_min_age_s = 0; /* start-up and reconnect: everything */
		if(!outbox && s->db_up && now >= s->next_outbox_ns){
			outbox = true;
			s->outbox_min_age_s = 2; /* periodic: leave fresh rows to their markers */
		}
		if(outbox) s->next_outbox_ns = now + (int64_t)p->cfg.refresh_s * 1000000000LL;
		if(jobs || outbox){
			int rc = s->db_up ? batch_db(s, jobs, outbox) : 0;
			if(rc == 0 && jobs){
				if(!batch_spool(s, jobs)){
					chat_store__log(p, MOSQ_LOG_ERR, "chat: store: postgres down and the spool failed: %s",
							strerror(errno));
					fail_jobs(s, jobs, "the message store is unavailable, try again");
				}
			}else if(rc < 0){
				fail_jobs(s, jobs, "the message store failed, try again");
			}
			if(rc == 0 && outbox){
				pthread_mutex_lock(&s->mu);
				s->outbox_ready = true;
				pthread_mutex_unlock(&s->mu);
			}
			while(jobs){
				struct chat_job *nx = jobs->next;
				chat_job__free(jobs);
				jobs = nx;
			}
			chat_wake__poke(p->wake);
		}
		if(now >= s->next_stats_ns){
			write_stats(s, qlen);
			s->next_stats_ns = now + (int64_t)p->cfg.stats_s * 1000000000LL;
		}
		/* log lines travel on the result queue too */
		pthread_mutex_lock(&s->rmu);
		bool pending = s->rhead != NULL;
		pthread_mutex_unlock(&s->rmu);
		if(pending) chat_wake__poke(p->wake);
		if(stop) break;
	}
	return NULL;
}

/* ---- broker-thread API --------------------------------------------------- */

int chat_store__start(struct chat_plugin *p)
{
	char err[512];
	struct chat_store *s = calloc(1, sizeof *s);
	if(!s) return -1;
	s->p = p;
	p->store = s;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_mutex_init(&s->rmu, NULL);
	chat_hmap_init(&s->counters);
	chat_hmap_init(&s->gcounters);
	chat_hmap_init(&s->known_contacts);
	chat_hmap_init(&s->recent);
	s->backoff_ms = 100;
	s->outbox_ready = true;
	snprintf(s->prefix, sizeof s->prefix, "%s", p->cfg.prefix);

	s->spool = chat_spool__open(p->cfg.spool_dir, err, sizeof err);
	if(!s->spool){
		mosquitto_log_printf(MOSQ_LOG_ERR, "chat: store: %s", err);
		return -1;
	}
	if(chat_spool__torn_bytes(s->spool)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "chat: store: spool had a torn tail of %zu bytes (a crash during a "
				"write that was never acknowledged); cut off", chat_spool__torn_bytes(s->spool));
	}
	if(chat_spool__pending(s->spool)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "chat: store: %zu spooled batches wait for replay",
				chat_spool__pending(s->spool));
	}
	p->wake = chat_wake__new(p->cfg.wakeup, p->wake_user, p->wake_pass, p->wake_clientid);
	if(!p->wake) return -1;
	if(pthread_create(&s->thread, NULL, writer_main, s)) return -1;
	s->started = true;
	return 0;
}

void chat_store__stop(struct chat_plugin *p)
{
	struct chat_store *s = p->store;
	if(!s || !s->started) return;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	s->started = false;
}

void chat_store__free(struct chat_plugin *p)
{
	struct chat_store *s = p->store;
	if(!s) return;
	while(s->head){
		struct chat_job *j = s->head;
		s->head = j->next;
		chat_job__free(j);
	}
	struct chat_res *r = s->rhead;
	while(r){
		struct chat_res *n = r->next;
		chat_res__free(r);
		r = n;
	}
	db_close(s);
	chat_spool__close(s->spool);
	free_map_values(&s->counters);
	free_map_values(&s->gcounters);
	chat_hmap_free(&s->known_contacts);
	chat_hmap_free(&s->recent);
	struct recent *rc = s->recent_head;
	while(rc){
		struct recent *n = rc->next;
		free(rc->key);
		free(rc->payload);
		free(rc);
		rc = n;
	}
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->rmu);
	chat_wake__free(p->wake);
	p->wake = NULL;
	free(s);
	p->store = NULL;
}

int chat_store__enqueue(struct chat_plugin *p, struct chat_job *j)
{
	struct chat_store *s = p->store;
	pthread_mutex_lock(&s->mu);
	if(s->qlen >= p->cfg.queue_max || s->stop){
		pthread_mutex_unlock(&s->mu);
		chat_job__free(j);
		return -1;
	}
	j->next = NULL;
	if(s->tail) s->tail->next = j;
	else s->head = j;
	s->tail = j;
	s->qlen++;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

struct chat_res *chat_store__results(struct chat_plugin *p)
{
	struct chat_store *s = p->store;
	if(!s) return NULL;
	pthread_mutex_lock(&s->rmu);
	struct chat_res *r = s->rhead;
	s->rhead = s->rtail = NULL;
	pthread_mutex_unlock(&s->rmu);
	return r;
}

void chat_store__outbox_ready(struct chat_plugin *p)
{
	struct chat_store *s = p->store;
	if(!s) return;
	pthread_mutex_lock(&s->mu);
	s->outbox_ready = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}
