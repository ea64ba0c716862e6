/* SPDX-License-Identifier: EPL-2.0
 * routes.c: the read endpoints of chat-rest (inbox, conversations, DM and
 * group history, presence) plus /healthz and /metrics. Stored rows are
 * turned back into events with chat_event_render, the renderer the
 * broker's writer used when it published them, so REST history is
 * byte-for-byte what the devices received; list responses are assembled
 * around those strings without re-encoding them.
 * Paging: fetch limit+1 rows; the extra row only says "there is more".
 */
#include "rest.h"
#include "event.h"
#include "pg.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters -------------------------------------------------------- */

/* Strict non-negative decimal (no sign, no spaces), fits in int64. */
static bool parse_u63(const char *s, int64_t *out)
{
	if(!s || !*s || strlen(s) > 19) return false;
	int64_t v = 0;
	for(const char *p = s; *p; p++){
		if(*p < '0' || *p > '9') return false;
		int d = *p - '0';
		if(v > (INT64_MAX - d) / 10) return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

/* ?limit: default CHAT_REST_LIMIT_DEFAULT, at least 1, values above the
 * configured maximum are clamped to it. False (400 sent) when malformed. */
static bool get_limit(struct chat_req *q, int64_t *limit)
{
	const char *v;
	int64_t max = q->rest->cfg.max_limit;
	*limit = CHAT_REST_LIMIT_DEFAULT < max ? CHAT_REST_LIMIT_DEFAULT : max;
	if(!chat_http__arg(q, "limit", &v)) return true;
	size_t len = strlen(v);
	int64_t n = 0;
	if(len == 0 || strspn(v, "0123456789") != len){
		chat_http__error(q, 400, "bad_request", "limit must be a positive integer");
		return false;
	}
	while(len > 1 && *v == '0'){
		v++;
		len--;
	}
	if(len > 18) n = max; /* huge but well-formed: clamped like any value above max */
	else parse_u63(v, &n);
	if(n < 1){
		chat_http__error(q, 400, "bad_request", "limit must be a positive integer");
		return false;
	}
	*limit = n > max ? max : n;
	return true;
}

/* A sequence-number cursor (?after or ?before); def when absent. */
static bool get_cursor(struct chat_req *q, const char *key, int64_t def, int64_t *out)
{
	const char *v;
	*out = def;
	if(!chat_http__arg(q, key, &v)) return true;
	if(!parse_u63(v, out)){
		char reason[64];
		snprintf(reason, sizeof reason, "%s must be a non-negative integer", key);
		chat_http__error(q, 400, "bad_request", reason);
		return false;
	}
	return true;
}

/* ---- rows to events ---------------------------------------------------- */

enum {
	C_SEQ, C_KIND, C_ID, C_TS, C_FROM, C_TO, C_GROUP, C_GSEQ, C_CID, C_BODY, C_META,
	C_STATUS, C_IDS, C_GEVENT, C_GUSER, C_GBY, C__EVENT_COLS
};

static const char *col(const PGresult *res, int row, int c)
{
	return PQgetisnull(res, row, c) ? NULL : PQgetvalue(res, row, c);
}

static int64_t col_i64(const PGresult *res, int row, int c)
{
	const char *v = col(res, row, c);
	return v ? strtoll(v, NULL, 10) : 0;
}

/* ---- group message bodies ------------------------------------------------ */

/* Up to this many groups on one page: one pruned statement per group;
 * more: one statement for all (see CHAT_Q_GROUP_BODIES_MANY in db.c). */
#define GB_MAX_QUERIES 3

struct gbodies {
	const char **body; /* per page row; NULL arrays when the page has no group message */
	const char **meta;
	PGresult *res[GB_MAX_QUERIES];
	int nres;
};

static void gb_free(struct gbodies *gb)
{
	free(gb->body);
	free(gb->meta);
	for(int i = 0; i < gb->nres; i++) PQclear(gb->res[i]);
	memset(gb, 0, sizeof *gb);
}

static bool is_group_msg(const PGresult *res, int row)
{
	const char *k = col(res, row, C_KIND);
	return k && strcmp(k, "msg") == 0 && col(res, row, C_GROUP);
}

/* Point body[i]/meta[i] of every group message among rows [0, n) of page
 * at its text in the results of r. */
static void gb_match(struct gbodies *gb, const PGresult *page, int n, const PGresult *r)
{
	int m = PQntuples(r);
	for(int j = 0; j < m; j++){
		const char *gid = PQgetvalue(r, j, 0), *gseq = PQgetvalue(r, j, 1);
		for(int i = 0; i < n; i++){
			if(is_group_msg(page, i) && strcmp(col(page, i, C_GSEQ) ? col(page, i, C_GSEQ) : "", gseq) == 0
					&& strcmp(col(page, i, C_GROUP), gid) == 0){
				gb->body[i] = PQgetvalue(r, j, 2);
				gb->meta[i] = PQgetisnull(r, j, 3) ? NULL : PQgetvalue(r, j, 3);
			}
		}
	}
}

static enum chat_db_rc gb_load(struct chat_req *q, const PGresult *page, int n, struct gbodies *gb)
{
	memset(gb, 0, sizeof *gb);
	const char *groups[GB_MAX_QUERIES + 1];
	int ng = 0;
	bool any = false;
	for(int i = 0; i < n; i++){
		if(!is_group_msg(page, i)) continue;
		any = true;
		const char *g = col(page, i, C_GROUP);
		bool seen = false;
		for(int k = 0; k < ng && !seen; k++) seen = strcmp(groups[k], g) == 0;
		if(!seen && ng <= GB_MAX_QUERIES) groups[ng++] = g;
	}
	if(!any) return CHAT_DB_OK;
	gb->body = calloc((size_t)n, sizeof *gb->body);
	gb->meta = calloc((size_t)n, sizeof *gb->meta);
	if(!gb->body || !gb->meta) return CHAT_DB_ERROR;

	enum chat_db_rc rc = CHAT_DB_OK;
	struct chat_pgarr gids = {0}, gseqs = {0};
	if(ng <= GB_MAX_QUERIES){
		for(int k = 0; k < ng && rc == CHAT_DB_OK; k++){
			chat_pgarr_reset(&gseqs);
			for(int i = 0; i < n; i++){
				if(is_group_msg(page, i) && strcmp(col(page, i, C_GROUP), groups[k]) == 0 &&
						chat_pgarr_i64(&gseqs, col_i64(page, i, C_GSEQ))){
					rc = CHAT_DB_ERROR;
				}
			}
			const char *lit = rc ? NULL : chat_pgarr_end(&gseqs);
			if(!lit){
				rc = CHAT_DB_ERROR;
				break;
			}
			const char *p[] = {groups[k], lit};
			rc = chat_db__exec(q->rest, CHAT_Q_GROUP_BODIES, 2, p, &gb->res[gb->nres]);
			if(rc == CHAT_DB_OK) gb_match(gb, page, n, gb->res[gb->nres++]);
		}
	}else{
		for(int i = 0; i < n; i++){
			if(is_group_msg(page, i) && (chat_pgarr_str(&gids, col(page, i, C_GROUP)) ||
						chat_pgarr_i64(&gseqs, col_i64(page, i, C_GSEQ)))){
				rc = CHAT_DB_ERROR;
			}
		}
		const char *l1 = rc ? NULL : chat_pgarr_end(&gids);
		const char *l2 = rc ? NULL : chat_pgarr_end(&gseqs);
		if(!l1 || !l2){
			rc = CHAT_DB_ERROR;
		}else{
			const char *p[] = {l1, l2};
			rc = chat_db__exec(q->rest, CHAT_Q_GROUP_BODIES_MANY, 2, p, &gb->res[0]);
			if(rc == CHAT_DB_OK){
				gb->nres = 1;
				gb_match(gb, page, n, gb->res[0]);
			}
		}
	}
	chat_pgarr_free(&gids);
	chat_pgarr_free(&gseqs);
	return rc;
}

/* Render one stored row (columns as in db.c) to its event JSON; gb (may
 * be NULL) supplies group message bodies. */
static char *render_row(const PGresult *res, int row, const struct gbodies *gb)
{
	struct chat_event ev = {0};
	const char *kind = col(res, row, C_KIND);
	ev.seq = col_i64(res, row, C_SEQ);
	ev.ts = col_i64(res, row, C_TS);
	ev.from = col(res, row, C_FROM);
	if(kind && strcmp(kind, "receipt") == 0){
		ev.kind = CHAT_EV_RECEIPT;
		const char *st = col(res, row, C_STATUS);
		ev.read = st && strcmp(st, "read") == 0;
		char **ids = NULL;
		long n = 0;
		const char *lit = col(res, row, C_IDS);
		if(lit){
			n = chat_pgarr_parse(lit, &ids);
			if(n < 0) return NULL;
		}
		ev.ids = (const char *const *)ids;
		ev.nids = (size_t)n;
		char *s = chat_event_render(&ev);
		chat_pgarr_parsed_free(ids, n);
		return s;
	}
	if(kind && strcmp(kind, "group") == 0){
		ev.kind = CHAT_EV_GROUP;
		ev.group = col(res, row, C_GROUP);
		ev.gevent = col(res, row, C_GEVENT);
		ev.guser = col(res, row, C_GUSER);
		ev.gby = col(res, row, C_GBY);
		return chat_event_render(&ev);
	}
	ev.kind = CHAT_EV_MSG;
	ev.id = col_i64(res, row, C_ID);
	ev.to = col(res, row, C_TO);
	ev.group = col(res, row, C_GROUP);
	ev.gseq = col_i64(res, row, C_GSEQ);
	ev.cid = col(res, row, C_CID);
	ev.body = col(res, row, C_BODY);
	ev.meta = col(res, row, C_META);
	if(gb && gb->body && ev.group){
		ev.body = gb->body[row];
		ev.meta = gb->meta[row];
	}
	return chat_event_render(&ev);
}

/* Append rows [0, n) as a JSON array body (without brackets). */
static int append_events(struct chat_buf *b, const PGresult *res, int n, const struct gbodies *gb)
{
	for(int i = 0; i < n; i++){
		char *s = render_row(res, i, gb);
		if(!s) return -1;
		int rc = (i ? chat_buf_puts(b, ",") : 0) | chat_buf_puts(b, s);
		free(s);
		if(rc) return -1;
	}
	return 0;
}

/* {"<list>":[events],"<cursor>":N|null}, the shape of every page. With
 * with_bodies, group message bodies are fetched first. */
static void send_page(struct chat_req *q, PGresult *res, int64_t limit, const char *list,
		const char *cursor, int cursor_col, bool with_bodies)
{
	int n = PQntuples(res);
	bool more = n > limit;
	int shown = more ? (int)limit : n;
	struct gbodies gb = {0};
	if(with_bodies){
		enum chat_db_rc rc = gb_load(q, res, shown, &gb);
		if(rc){
			gb_free(&gb);
			chat_http__db_error(q, rc);
			return;
		}
	}
	struct chat_buf b = {0};
	int rc = chat_buf_printf(&b, "{\"%s\":[", list);
	rc |= append_events(&b, res, shown, with_bodies ? &gb : NULL);
	if(more) rc |= chat_buf_printf(&b, "],\"%s\":%s}", cursor, PQgetvalue(res, shown - 1, cursor_col));
	else rc |= chat_buf_printf(&b, "],\"%s\":null}", cursor);
	gb_free(&gb);
	if(rc){
		chat_buf_free(&b);
		chat_http__error(q, 500, "internal", "out of memory");
		return;
	}
	chat_http__jsonbuf(q, 200, &b);
}

/* ---- GET /v1/inbox?after=SEQ&limit=N ------------------------------------ */

void chat_route__inbox(struct chat_req *q)
{
	int64_t after, limit;
	if(!get_cursor(q, "after", 0, &after) || !get_limit(q, &limit)) return;
	char a[24], l[24];
	snprintf(a, sizeof a, "%lld", (long long)after);
	snprintf(l, sizeof l, "%lld", (long long)limit + 1);
	const char *p[] = {q->user, a, l};
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(q->rest, CHAT_Q_INBOX, 3, p, &res);
	if(rc){
		chat_http__db_error(q, rc);
		return;
	}
	/* next: the seq to pass as ?after, i.e. the last one on this page. */
	send_page(q, res, limit, "events", "next", C_SEQ, true);
	PQclear(res);
}

/* ---- GET /v1/conversations ------------------------------------------------ */

void chat_route__conversations(struct chat_req *q)
{
	int64_t limit = q->rest->cfg.max_limit;
	const char *v;
	if(chat_http__arg(q, "limit", &v) && !get_limit(q, &limit)) return;
	char l[24];
	snprintf(l, sizeof l, "%lld", (long long)limit);
	const char *p[] = {q->user, l};
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(q->rest, CHAT_Q_CONVERSATIONS, 2, p, &res);
	if(rc){
		chat_http__db_error(q, rc);
		return;
	}
	int n = PQntuples(res);
	struct gbodies gb;
	rc = gb_load(q, res, n, &gb);
	if(rc){
		gb_free(&gb);
		PQclear(res);
		chat_http__db_error(q, rc);
		return;
	}
	struct chat_buf b = {0};
	int e = chat_buf_puts(&b, "{\"conversations\":[");
	for(int i = 0; i < n && !e; i++){
		const char *ckind = PQgetvalue(res, i, C__EVENT_COLS);
		const char *conv = PQgetvalue(res, i, C__EVENT_COLS + 1);
		const char *unread = PQgetvalue(res, i, C__EVENT_COLS + 2);
		bool dm = strcmp(ckind, "dm") == 0;
		char *ev = render_row(res, i, &gb);
		if(!ev){
			e = -1;
			break;
		}
		e |= chat_buf_printf(&b, "%s{\"kind\":\"%s\",\"%s\":", i ? "," : "", dm ? "dm" : "group",
				dm ? "peer" : "group");
		e |= chat_http__append_jstr(&b, conv);
		e |= chat_buf_printf(&b, ",\"last\":%s,\"unread\":%s}", ev, *unread ? unread : "0");
		free(ev);
	}
	e |= chat_buf_puts(&b, "]}");
	gb_free(&gb);
	PQclear(res);
	if(e){
		chat_buf_free(&b);
		chat_http__error(q, 500, "internal", "out of memory");
		return;
	}
	chat_http__jsonbuf(q, 200, &b);
}

/* ---- GET /v1/conversations/{peer}/messages?before=SEQ&limit=N ------------- */

void chat_route__conv_messages(struct chat_req *q)
{
	if(!q->param_valid){
		chat_http__error(q, 400, "bad_request", "peer must be a user id of 1 to 64 characters [A-Za-z0-9._-]");
		return;
	}
	int64_t before, limit;
	if(!get_cursor(q, "before", INT64_MAX, &before) || !get_limit(q, &limit)) return;
	char bf[24], l[24];
	snprintf(bf, sizeof bf, "%lld", (long long)before);
	snprintf(l, sizeof l, "%lld", (long long)limit + 1);
	const char *p[] = {q->user, q->param, bf, l};
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(q->rest, CHAT_Q_DM_PAGE, 4, p, &res);
	if(rc){
		chat_http__db_error(q, rc);
		return;
	}
	/* No conversation with that peer (or no such user): an empty page. */
	send_page(q, res, limit, "messages", "next_before", C_SEQ, false);
	PQclear(res);
}

/* ---- GET /v1/groups/{gid}/messages?before=GSEQ&limit=N -------------------- */

void chat_route__group_messages(struct chat_req *q)
{
	if(!q->param_valid){
		chat_http__error(q, 400, "bad_request", "group must be a group id of 1 to 64 characters [A-Za-z0-9._-]");
		return;
	}
	int64_t before, limit;
	if(!get_cursor(q, "before", INT64_MAX, &before) || !get_limit(q, &limit)) return;
	const char *pa[] = {q->user, q->param};
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(q->rest, CHAT_Q_GROUP_ACCESS, 2, pa, &res);
	if(rc){
		chat_http__db_error(q, rc);
		return;
	}
	bool exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	bool member = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	if(!exists){
		chat_http__error(q, 404, "not_found", "no such group");
		return;
	}
	if(!member){
		chat_http__error(q, 403, "forbidden", "not a member of this group");
		return;
	}
	char bf[24], l[24];
	snprintf(bf, sizeof bf, "%lld", (long long)before);
	snprintf(l, sizeof l, "%lld", (long long)limit + 1);
	const char *p[] = {q->user, q->param, bf, l};
	rc = chat_db__exec(q->rest, CHAT_Q_GROUP_PAGE, 4, p, &res);
	if(rc){
		chat_http__db_error(q, rc);
		return;
	}
	send_page(q, res, limit, "messages", "next_before", C_GSEQ, false);
	PQclear(res);
}

/* ---- GET /v1/presence?users=a,b,c ----------------------------------------- */

void chat_route__presence(struct chat_req *q)
{
	const char *v;
	if(!chat_http__arg(q, "users", &v) || !*v){
		chat_http__error(q, 400, "bad_request", "users must list user ids separated by commas");
		return;
	}
	struct chat_pgarr arr = {0};
	size_t count = 0;
	for(const char *p = v;;){
		size_t n = strcspn(p, ",");
		if(!chat_id_validn(p, n)){
			chat_pgarr_free(&arr);
			chat_http__error(q, 400, "bad_request",
					"users must list user ids (1 to 64 characters [A-Za-z0-9._-]) separated by commas");
			return;
		}
		if(++count > CHAT_REST_PRESENCE_MAX){
			chat_pgarr_free(&arr);
			chat_http__error(q, 400, "bad_request", "at most 500 users per request");
			return;
		}
		char id[CHAT_ID_MAX + 1];
		memcpy(id, p, n);
		id[n] = '\0';
		if(chat_pgarr_str(&arr, id)){
			chat_pgarr_free(&arr);
			chat_http__error(q, 500, "internal", "out of memory");
			return;
		}
		if(!p[n]) break;
		p += n + 1;
	}
	const char *lit = chat_pgarr_end(&arr);
	if(!lit){
		chat_pgarr_free(&arr);
		chat_http__error(q, 500, "internal", "out of memory");
		return;
	}
	const char *params[] = {q->user, lit};
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(q->rest, CHAT_Q_PRESENCE, 2, params, &res);
	chat_pgarr_free(&arr);
	if(rc){
		chat_http__db_error(q, rc);
		return;
	}
	json_t *list = json_array();
	int n = PQntuples(res);
	for(int i = 0; list && i < n; i++){
		const char *user = PQgetvalue(res, i, 0);
		/* a name given twice is answered once */
		bool dup = false;
		for(int j = 0; j < i && !dup; j++) dup = strcmp(PQgetvalue(res, j, 0), user) == 0;
		if(dup) continue;
		const char *status = col(res, i, 1);
		json_t *o = json_object();
		json_object_set_new(o, "user", json_string(user));
		json_object_set_new(o, "status", json_string(status && strcmp(status, "online") == 0 ? "online" : "offline"));
		json_object_set_new(o, "last_seen", col(res, i, 2) ? json_integer(col_i64(res, i, 2)) : json_null());
		json_array_append_new(list, o);
	}
	PQclear(res);
	json_t *root = json_object();
	json_object_set_new(root, "presence", list);
	char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	chat_http__json(q, 200, s);
}

/* ---- GET /healthz, GET /metrics ------------------------------------------- */

void chat_route__healthz(struct chat_req *q)
{
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(q->rest, CHAT_Q_PING, 0, NULL, &res);
	if(rc == CHAT_DB_OK){
		PQclear(res);
		chat_http__json(q, 200, strdup("{\"status\":\"ok\",\"db\":\"ok\"}"));
		return;
	}
	q->retry_after_s = 1;
	chat_http__json(q, 503, strdup("{\"status\":\"unavailable\",\"db\":\"down\","
				"\"error\":\"unavailable\",\"reason\":\"the database is unavailable\"}"));
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; anything else -> '_'. */
static void metric_name(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	for(const char *p = in; *p && o + 1 < outlen; p++){
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
		out[o++] = ok ? c : '_';
	}
	out[o] = '\0';
}

void chat_route__metrics(struct chat_req *q)
{
	struct chat_buf b = {0};
	if(chat_metrics__render(&q->rest->metrics, &b)){
		chat_buf_free(&b);
		chat_http__error(q, 500, "internal", "out of memory");
		return;
	}
	/* The broker plugin's counters, as gauges (the table holds its latest
	 * values); left out while the database is away. */
	PGresult *res;
	if(chat_db__exec(q->rest, CHAT_Q_PLUGIN_STATS, 0, NULL, &res) == CHAT_DB_OK){
		int n = PQntuples(res);
		for(int i = 0; i < n; i++){
			char name[160];
			metric_name(PQgetvalue(res, i, 0), name, sizeof name);
			if(!*name) continue;
			chat_buf_printf(&b, "# TYPE chat_plugin_%s gauge\nchat_plugin_%s %s\n", name, name,
					PQgetvalue(res, i, 1));
		}
		PQclear(res);
	}
	size_t len = b.len;
	char *data = b.data;
	b.data = NULL;
	chat_http__text(q, 200, "text/plain; version=0.0.4; charset=utf-8", data, data ? len : 0);
}
