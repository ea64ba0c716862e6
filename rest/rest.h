/* SPDX-License-Identifier: EPL-2.0
 * rest.h: chat-rest, the HTTP/JSON shim beside the broker (login, history,
 * conversations, presence, health, metrics). One struct chat_rest holds
 * the whole daemon state; libmicrohttpd's worker threads receive it as
 * their callback argument. Each worker owns one PostgreSQL connection
 * (db.c), so a request never waits for another thread's query.
 * Modules: main.c (config, signals), http.c (MHD glue, routing, responses),
 * routes.c (endpoints), auth.c (login, bearer tokens, rate limits),
 * db.c (connections, statements), metrics.c (Prometheus text).
 */
#ifndef CHAT_REST_H
#define CHAT_REST_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "auth.h"
#include "ids.h"
#include "util.h"

struct MHD_Connection;
struct MHD_Daemon;

/* ==== limits and defaults ============================================== */

#define CHAT_REST_LISTEN_DEFAULT "127.0.0.1:8080"
#define CHAT_REST_THREADS_DEFAULT 4
#define CHAT_REST_TTL_DEFAULT 86400
#define CHAT_REST_LIMIT_DEFAULT 50      /* page size when ?limit is absent */
#define CHAT_REST_MAX_LIMIT_DEFAULT 500 /* larger ?limit values are clamped */
#define CHAT_REST_LOGIN_RATE_USER 10    /* login attempts per minute per user */
#define CHAT_REST_LOGIN_RATE_ADDR 30    /* login attempts per minute per address */
#define CHAT_REST_BODY_MAX (64 * 1024)  /* request bodies above: 413 */
#define CHAT_REST_USER_CACHE_NS (5LL * 1000000000LL) /* "user exists and is enabled" */
#define CHAT_REST_PRESENCE_MAX 500     /* names in one ?users= */

/* ==== configuration (main.c) ========================================== */

struct chat_rest_config {
	char *listen;            /* HOST:PORT, [V6]:PORT */
	char *db;                /* libpq conninfo; "" = libpq defaults / PG* variables */
	char *token_secret_file;
	int threads;
	int64_t token_ttl_s;
	int max_limit;
	int login_rate_user;     /* per minute; 0 = off */
	int login_rate_addr;     /* per minute; 0 = off */
};

/* ==== metrics (metrics.c) ============================================== */

enum chat_route {
	CHAT_R_LOGIN,
	CHAT_R_INBOX,
	CHAT_R_CONVERSATIONS,
	CHAT_R_CONV_MESSAGES,
	CHAT_R_GROUP_MESSAGES,
	CHAT_R_PRESENCE,
	CHAT_R_HEALTHZ,
	CHAT_R_METRICS,
	CHAT_R_UNMATCHED,
	CHAT_R__COUNT
};

#define CHAT_METRIC_STATUSES 12 /* 200 400 401 403 404 405 413 429 500 503 other */
#define CHAT_METRIC_BUCKETS 14

struct chat_metrics {
	atomic_uint_fast64_t requests[CHAT_R__COUNT][CHAT_METRIC_STATUSES];
	atomic_uint_fast64_t buckets[CHAT_R__COUNT][CHAT_METRIC_BUCKETS]; /* not cumulative */
	atomic_uint_fast64_t count[CHAT_R__COUNT];
	atomic_uint_fast64_t sum_ns[CHAT_R__COUNT];
	atomic_uint_fast64_t db_errors;
	atomic_int db_up;        /* last connection attempt or query outcome */
};

const char *chat_metrics__route_name(enum chat_route r);
void chat_metrics__observe(struct chat_metrics *m, enum chat_route r, unsigned status,
		int64_t elapsed_ns);
/* Append the daemon's own series to out. 0 or -1. */
int chat_metrics__render(struct chat_metrics *m, struct chat_buf *out);

/* ==== rate limits and caches (auth.c) ================================== */

struct chat_bucket {
	uint64_t key;        /* keyed hash of the user id or client address; 0 = free */
	double tokens;
	int64_t last_ns;
};

/* Token buckets in a fixed table: `per_min` attempts a minute with a
 * burst of the same size. Thread-safe. */
struct chat_ratelimit {
	pthread_mutex_t mu;
	struct chat_bucket *slots;
	size_t nslots;       /* power of two */
	double per_ns;       /* refill rate */
	double burst;
	int per_min;         /* 0 = no limit */
};

struct chat_user_cache_entry {
	char user[CHAT_ID_MAX + 1];
	int64_t until_ns;
};

/* ==== the daemon ======================================================= */

struct chat_rest {
	struct chat_rest_config cfg;
	struct chat_secret secret;
	char dummy_hash[CHAT_PWHASH_MAX]; /* verified for unknown users: same time as a real miss */
	uint64_t hash_seed[2];            /* keys the rate-limit table hash */
	struct MHD_Daemon *mhd;
	struct chat_metrics metrics;
	struct chat_ratelimit rl_user;
	struct chat_ratelimit rl_addr;
	pthread_mutex_t cache_mu;
	struct chat_user_cache_entry *user_cache; /* CHAT_REST_USER_CACHE_SLOTS entries */
};

#define CHAT_REST_USER_CACHE_SLOTS 4096

/* ==== requests and responses (http.c) ================================= */

/* One HTTP request from first header to completion. Handlers read the
 * request fields and fill the response fields; http.c turns them into an
 * MHD response. */
struct chat_req {
	struct chat_rest *rest;
	struct MHD_Connection *conn;
	enum chat_route route;
	int64_t start_ns;
	bool is_post;
	bool body_overflow;
	struct chat_buf body;               /* POST bodies only */
	char param[CHAT_ID_MAX + 1]; /* {peer} / {gid} path segment, when valid */
	bool param_valid;
	char user[65];                      /* the caller, after chat_auth__bearer */
	/* response */
	unsigned status;
	char *resp;                         /* malloc'd, owned */
	size_t resp_len;
	const char *content_type;
	const char *allow;                  /* 405: Allow header */
	int retry_after_s;                  /* 429/503: Retry-After when > 0 */
	bool no_store;
};

/* Response helpers. Each replaces any previous response. */
void chat_http__json(struct chat_req *q, unsigned status, char *body /* takes ownership */);
void chat_http__jsonbuf(struct chat_req *q, unsigned status, struct chat_buf *b /* data taken */);
void chat_http__error(struct chat_req *q, unsigned status, const char *code, const char *reason);
void chat_http__text(struct chat_req *q, unsigned status, const char *ctype, char *body, size_t len);

/* Query string argument: returns true when present (value may be "" when
 * given as "?key" or "?key="). */
bool chat_http__arg(struct chat_req *q, const char *key, const char **value);
/* Request header or NULL. */
const char *chat_http__header(struct chat_req *q, const char *name);
/* Client address as bytes (4 for IPv4, 16 for IPv6) into out; returns the
 * length, 0 when unknown. */
size_t chat_http__client_addr(struct chat_req *q, unsigned char out[16]);

/* Append s as a JSON string literal. 0 or -1. */
int chat_http__append_jstr(struct chat_buf *b, const char *s);

int chat_http__start(struct chat_rest *r, int listen_fd);
void chat_http__stop(struct chat_rest *r);

/* ==== endpoints (routes.c) ============================================= */

void chat_route__inbox(struct chat_req *q);
void chat_route__conversations(struct chat_req *q);
void chat_route__conv_messages(struct chat_req *q);
void chat_route__group_messages(struct chat_req *q);
void chat_route__presence(struct chat_req *q);
void chat_route__healthz(struct chat_req *q);
void chat_route__metrics(struct chat_req *q);

/* ==== authentication (auth.c) ========================================== */

int chat_auth__init(struct chat_rest *r, char *err, size_t errlen);
void chat_auth__cleanup(struct chat_rest *r);
/* POST /v1/login */
void chat_auth__login(struct chat_req *q);
/* Check the Bearer token and that its user exists and is enabled; fills
 * q->user and returns true, or sets an error response and returns false. */
bool chat_auth__bearer(struct chat_req *q);

/* ==== database (db.c) ================================================== */

/* Prepared statements, one PGconn per worker thread. */
enum chat_stmt {
	CHAT_Q_PING,
	CHAT_Q_USER_ENABLED,
	CHAT_Q_LOGIN_USER,
	CHAT_Q_SET_VERIFIER,
	CHAT_Q_INBOX,
	CHAT_Q_GROUP_BODIES,
	CHAT_Q_GROUP_BODIES_MANY,
	CHAT_Q_CONVERSATIONS,
	CHAT_Q_DM_PAGE,
	CHAT_Q_GROUP_ACCESS,
	CHAT_Q_GROUP_PAGE,
	CHAT_Q_PRESENCE,
	CHAT_Q_PLUGIN_STATS,
	CHAT_Q__COUNT
};

enum chat_db_rc {
	CHAT_DB_OK = 0,
	CHAT_DB_DOWN,   /* no connection: 503 unavailable */
	CHAT_DB_ERROR,  /* the statement failed: 500 internal */
};

void chat_db__init(struct chat_rest *r);
/* Run a prepared statement on this thread's connection, (re)connecting as
 * needed and retrying once on a connection lost mid-way (every statement
 * here is idempotent). On CHAT_DB_OK *res holds the result (PQclear it). */
enum chat_db_rc chat_db__exec(struct chat_rest *r, enum chat_stmt s, int nparams,
		const char *const *params, PGresult **res);
/* Print every statement as a psql PREPARE (for EXPLAIN and review). */
void chat_db__print_sql(FILE *f);
/* Close every worker's connection (after the HTTP workers have stopped). */
void chat_db__shutdown(void);

/* Send the right error for a failed chat_db__exec. */
void chat_http__db_error(struct chat_req *q, enum chat_db_rc rc);

/* ==== logging ========================================================== */

void chat_rest__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
