/* SPDX-License-Identifier: EPL-2.0
 * event.h: the wire shapes of the contract, in one place.
 *  - parsing what a client publishes on chat/dm, chat/group, chat/receipt;
 *  - rendering inbox events (msg, receipt, group, typing, error) to JSON.
 * The broker's writer thread renders events when it stores them and
 * chat-rest renders stored rows with the same code, so a history page is
 * byte-for-byte what was published.
 */
#ifndef CHAT_EVENT_H
#define CHAT_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHAT_CID_MAX 64

enum chat_err {
	CHAT_OK = 0,
	CHAT_E_BAD_PAYLOAD,
	CHAT_E_TOO_LARGE,
	CHAT_E_UNKNOWN_RECIPIENT,
	CHAT_E_NOT_MEMBER,
	CHAT_E_BLOCKED,
	CHAT_E_RATE_LIMITED,
	CHAT_E_UNAVAILABLE,
};
/* Wire name of an error code ("bad_payload", ...). */
const char *chat_err_code(enum chat_err e);

/* A parsed send (chat/dm/{peer} or chat/group/{gid}). Strings are malloc'd
 * and owned by the struct; free with chat_send_free. */
struct chat_send {
	char *cid;  /* NULL when absent */
	char *body;
	char *meta; /* compact JSON object text, NULL when absent */
};
/* Parse a payload. Returns CHAT_OK or CHAT_E_BAD_PAYLOAD; on error, *cid_out
 * (if not NULL) receives a malloc'd copy of a readable cid, or NULL, and
 * reason a short human text. */
enum chat_err chat_send_parse(const void *payload, size_t len, struct chat_send *out, char **cid_out,
		const char **reason);
void chat_send_free(struct chat_send *s);

/* A parsed receipt {"status":"delivered"|"read","ids":["…",…]}. */
#define CHAT_RECEIPT_MAX_IDS 256
struct chat_receipt_in {
	bool read;                 /* false: delivered */
	size_t n;
	int64_t ids[CHAT_RECEIPT_MAX_IDS];
};
enum chat_err chat_receipt_parse(const void *payload, size_t len, struct chat_receipt_in *out,
		const char **reason);

/* An inbox event, as stored and as published. Pointers are borrowed. */
enum chat_event_kind { CHAT_EV_MSG, CHAT_EV_RECEIPT, CHAT_EV_GROUP };
struct chat_event {
	enum chat_event_kind kind;
	int64_t seq;
	int64_t ts;
	int64_t id;          /* msg */
	const char *from;    /* msg: sender; receipt: reader */
	const char *to;      /* dm msg */
	const char *group;   /* group msg / group event */
	int64_t gseq;        /* group msg, 0 = absent */
	const char *cid;     /* sender's copy only */
	const char *body;
	const char *meta;    /* JSON object text or NULL */
	bool read;           /* receipt status */
	const char *const *ids; /* receipt ids (decimal strings) */
	size_t nids;
	const char *gevent;  /* created/added/removed */
	const char *guser;
	const char *gby;     /* NULL renders as null */
};
/* Render to compact JSON; malloc'd string or NULL. */
char *chat_event_render(const struct chat_event *ev);

/* {"type":"error","cid":…,"code":…,"reason":…}; cid may be NULL. */
char *chat_error_render(enum chat_err code, const char *cid, const char *reason);
/* {"type":"typing","from":…,"to":…} or with "group". */
char *chat_typing_render(const char *from, const char *to, const char *group);
/* {"user":…,"status":"online"|"offline","ts":…,"last_seen":… or null} */
char *chat_presence_render(const char *user, bool online, int64_t ts, int64_t last_seen);

#endif
