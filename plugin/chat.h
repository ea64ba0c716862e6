/* SPDX-License-Identifier: EPL-2.0
 * chat.h: the plugin's shared state and module interfaces.
 *
 * Threads (see store.c DESIGN): the broker thread runs every callback and
 * owns everything under "broker thread" below; the writer thread owns the
 * PostgreSQL connection for messages and the spool; the directory thread
 * owns a second connection that loads users, groups and contacts. They talk
 * only through the queues declared here, carrying copied strings.
 */
#ifndef CHAT_PLUGIN_H
#define CHAT_PLUGIN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "event.h"
#include "hmap.h"
#include "ids.h"

struct mosquitto;

#define CHAT_CLIENTID_MAX (CHAT_ID_MAX * 2 + 2)

/* ===================================================================== */
/* Configuration (config.c)                                               */
/* ===================================================================== */

struct chat_config {
	char *db_conninfo;
	char *token_secret_file;
	char *spool_dir;
	char *prefix;           /* without trailing '/' */
	size_t prefix_len;
	bool outside_allow;
	unsigned max_payload;
	unsigned debounce_ms;
	unsigned node_id;
	unsigned batch_max;
	unsigned queue_max;
	unsigned typing_per_s;
	unsigned refresh_s;
	unsigned stats_s;
	char *wakeup;           /* "auto", "off" or "host:port" */
};

struct mosquitto_opt;
/* Parse plugin_opt_* into cfg (defaults for what is absent). 0, or -1 with
 * a reason in err. */
int chat_config__parse(struct chat_config *cfg, struct mosquitto_opt *opts, int count, char *err,
		size_t errlen);
void chat_config__free(struct chat_config *cfg);

/* ===================================================================== */
/* Topics (topics.c): pure classification, no state                       */
/* ===================================================================== */

enum chat_topic_kind {
	CHAT_T_OUTSIDE = 0,   /* not under the prefix */
	CHAT_T_DM,            /* prefix/dm/{arg} */
	CHAT_T_GROUP,         /* prefix/group/{arg} */
	CHAT_T_RECEIPT,       /* prefix/receipt/{arg} */
	CHAT_T_TYPING,        /* prefix/typing/{arg} */
	CHAT_T_TYPING_GROUP,  /* prefix/typing/group/{arg} */
	CHAT_T_INBOX,         /* prefix/inbox/{arg} */
	CHAT_T_PRESENCE,      /* prefix/presence/{arg} */
	CHAT_T_OTHER,         /* under the prefix, no known shape */
	CHAT_T_WILD_IN,       /* a filter with wildcards that can only match under the prefix */
	CHAT_T_WILD_ANY,      /* a filter with wildcards that may match both */
};

struct chat_topic {
	enum chat_topic_kind kind;
	const char *arg;      /* points into the topic; NUL-terminated rest */
};

/* Classify a topic (publish) or a subscription filter. */
void chat_topic__classify(const char *prefix, size_t plen, const char *topic, bool filter,
		struct chat_topic *out);

/* ===================================================================== */
/* Directory snapshot (membership.c): built by the directory thread,      */
/* swapped in and then read only by the broker thread.                    */
/* ===================================================================== */

struct chat_group {
	char id[CHAT_ID_MAX + 1];
	struct chat_hmap members;  /* user id -> (void *)1 */
	char **member_ids;         /* for fan-out, nmembers entries */
	size_t nmembers;
};

struct chat_user {
	char id[CHAT_ID_MAX + 1];
	char verifier[CHAT_VERIFIER_MAX];
	bool disabled;
	struct chat_group **groups; /* groups this user belongs to */
	size_t ngroups;
};

struct chat_presence_row {
	char user[CHAT_ID_MAX + 1];
	bool online;
	int64_t last_seen;
};

struct chat_dir {
	struct chat_hmap users;    /* id -> struct chat_user */
	struct chat_hmap groups;   /* id -> struct chat_group */
	/* First load only: */
	char (*contacts)[2][CHAT_ID_MAX + 1];
	size_t ncontacts;
	struct chat_presence_row *presence;
	size_t npresence;
	bool first;
	/* group_outbox rows up to this id belong to the membership in this
	 * snapshot: the broker enqueues an outbox marker when it swaps it in,
	 * so group events take their place in the stream of sends. 0: none. */
	int64_t outbox_upto;
	bool users_changed;
};

void chat_dir__free(struct chat_dir *d);

struct chat_plugin;
int chat_dirthread__start(struct chat_plugin *p);
void chat_dirthread__stop(struct chat_plugin *p);
/* Broker thread: take the newest snapshot, if any (caller owns it). */
struct chat_dir *chat_dirthread__take(struct chat_plugin *p);
/* Broker thread: ask the directory thread to check a password against the
 * PBKDF2 hash and store a fresh verifier when it matches. */
void chat_dirthread__slow_auth(struct chat_plugin *p, const char *user, const char *password);

/* ===================================================================== */
/* Writer (store.c) and spool (spool.c)                                   */
/* ===================================================================== */

enum chat_job_kind { CHAT_JOB_DM, CHAT_JOB_GROUP, CHAT_JOB_RECEIPT, CHAT_JOB_PRESENCE, CHAT_JOB_OUTBOX };

/* One unit of work for the writer. Owned by whoever holds it; every string
 * is a private copy (never a pointer into broker memory). */
struct chat_job {
	struct chat_job *next;
	enum chat_job_kind kind;
	int64_t id;                          /* message id (msg) */
	int64_t ts;
	char from[CHAT_ID_MAX + 1];          /* sender / reader / presence user */
	char device[CHAT_CLIENTID_MAX];      /* client id of the sending device */
	char to[CHAT_ID_MAX + 1];            /* DM peer / receipt target */
	char group[CHAT_ID_MAX + 1];
	struct chat_send send;               /* cid, body, meta */
	char **members;                      /* group fan-out at intake time */
	size_t nmembers;
	struct chat_receipt_in *receipt;
	bool online;                         /* presence */
	int64_t last_seen;
	int64_t outbox_upto;                 /* outbox marker */
	bool reload_counters;                /* users or groups deleted/re-created */
};
void chat_job__free(struct chat_job *j);

/* What the writer hands back to the broker thread. */
enum chat_res_kind { CHAT_RES_PUBLISH, CHAT_RES_CONTACT, CHAT_RES_LOG };
struct chat_res {
	struct chat_res *next;
	enum chat_res_kind kind;
	char *topic;       /* publish */
	char *clientid;    /* publish to one device only, or NULL */
	char *payload;     /* publish payload / log text */
	size_t len;
	uint8_t qos;
	bool retain;
	int level;         /* log */
	char a[CHAT_ID_MAX + 1], b[CHAT_ID_MAX + 1]; /* contact pair */
};
void chat_res__free(struct chat_res *r);

struct chat_store;
int chat_store__start(struct chat_plugin *p);
/* Drain (commit or spool what is queued), stop and free the writer. */
void chat_store__stop(struct chat_plugin *p);
/* Free what the writer left (after stop). */
void chat_store__free(struct chat_plugin *p);
/* Broker thread: hand a job over (takes ownership). 0, or -1 when the
 * queue is full (the job is freed). */
int chat_store__enqueue(struct chat_plugin *p, struct chat_job *j);
/* Broker thread: take every finished result, oldest first. */
struct chat_res *chat_store__results(struct chat_plugin *p);
/* Any thread: queue a log line for the broker thread. */
void chat_store__log(struct chat_plugin *p, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Any thread: catch up on group_outbox (start-up, reconnect). */
void chat_store__outbox_ready(struct chat_plugin *p);

/* Spool: length+CRC framed records of string vectors, fsync'd. */
struct chat_spool;
struct chat_spool *chat_spool__open(const char *dir, char *err, size_t errlen);
void chat_spool__close(struct chat_spool *s);
/* Append one record and fsync. 0 or -1. */
int chat_spool__append(struct chat_spool *s, const char *const *v, const size_t *lens, size_t n);
/* Records waiting for replay. */
size_t chat_spool__pending(const struct chat_spool *s);
/* Read record k (0-based, from the start) into malloc'd strings; returns
 * 0, 1 at the end, -1 on a corrupt record (a torn tail). */
int chat_spool__read(struct chat_spool *s, size_t k, char ***v, size_t *n);
/* Everything replayed: truncate. */
int chat_spool__truncate(struct chat_spool *s);
/* Bytes at the end that did not form a whole record at open (torn tail). */
size_t chat_spool__torn_bytes(const struct chat_spool *s);

/* ===================================================================== */
/* Wake-up (wake.c): a loopback MQTT connection the writer pokes so that  */
/* the broker's epoll_wait returns and TICK runs without its 100 ms sleep. */
/* ===================================================================== */

struct chat_wake;
struct chat_wake *chat_wake__new(const char *mode, const char *user, const char *password,
		const char *clientid);
/* Writer thread only. Cheap when a poke is already pending. */
void chat_wake__poke(struct chat_wake *w);
/* Writer thread: keep the connection alive; connect lazily. */
void chat_wake__service(struct chat_wake *w);
/* Broker thread (TICK): a poke has been consumed. */
void chat_wake__consumed(struct chat_wake *w);
void chat_wake__free(struct chat_wake *w);
bool chat_wake__connected(const struct chat_wake *w);

/* ===================================================================== */
/* Broker-thread state                                                    */
/* ===================================================================== */

/* Live state of one user with devices or presence (broker thread). */
struct chat_live {
	char id[CHAT_ID_MAX + 1];
	int devices;
	bool online_published;
	int64_t pending_since_ms;  /* first device connected, online not yet published; 0 = none */
	int64_t last_seen;         /* ms, 0 = never */
	double typing_tokens;
	int64_t typing_ms;
	struct chat_live *pending_next; /* on the debounce list */
	bool on_pending;
};

/* One authenticated connection (keyed by its struct mosquitto *). */
struct chat_conn {
	char user[CHAT_ID_MAX + 1];
};

struct chat_plugin {
	void *pid;                  /* mosquitto_plugin_id_t * */
	struct chat_config cfg;
	struct chat_secret secret;
	char wake_user[32];
	char wake_pass[65];
	char wake_clientid[48];

	/* broker thread */
	struct chat_dir *dir;        /* NULL until the first load */
	struct chat_hmap live;       /* user id -> struct chat_live */
	struct chat_hmap conns;      /* (struct mosquitto *) bytes -> struct chat_conn */
	struct chat_hmap contacts;   /* "a\0b" -> (void *)1, both orders */
	struct chat_live *pending;   /* debounce list */
	int64_t id_last_ms;
	unsigned id_counter;
	bool presence_restored;
	int64_t log_rate_ms;

	/* threads */
	struct chat_store *store;
	struct chat_wake *wake;
	void *dirt;                  /* struct chat_dirthread */

	/* counters shared with the writer for plugin_stats */
	atomic_long st_connected;
	atomic_long st_received;
	atomic_long st_errors;
};

/* auth.c, acl.c, intake.c, presence.c, tick.c: broker callbacks. */
int chat_auth__basic_cb(int event, void *event_data, void *userdata);
int chat_acl__check_cb(int event, void *event_data, void *userdata);
int chat_intake__message_cb(int event, void *event_data, void *userdata);
int chat_presence__disconnect_cb(int event, void *event_data, void *userdata);
int chat_tick__cb(int event, void *event_data, void *userdata);

/* presence.c */
void chat_presence__connected(struct chat_plugin *p, struct mosquitto *client, const char *user);
void chat_presence__tick(struct chat_plugin *p, int64_t now_ms);
void chat_presence__restore(struct chat_plugin *p, const struct chat_dir *d);
bool chat_presence__visible(const struct chat_plugin *p, const char *viewer, const char *user);
struct chat_live *chat_live__get(struct chat_plugin *p, const char *user, bool create);
void chat_live__free_all(struct chat_plugin *p);

/* intake.c */
int64_t chat_intake__new_id(struct chat_plugin *p, int64_t now_ms);
/* Publish an error event to one device (broker thread). */
void chat_intake__error(struct chat_plugin *p, const char *user, const char *clientid,
		enum chat_err code, const char *cid, const char *reason);

/* tick.c: apply a directory snapshot. */
void chat_tick__apply_dir(struct chat_plugin *p, struct chat_dir *d);

/* Topic of a user's inbox / presence into buf; returns buf. */
char *chat_topic__user(const struct chat_plugin *p, const char *what, const char *user, char *buf,
		size_t len);

#endif
