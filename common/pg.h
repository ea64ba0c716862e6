/* SPDX-License-Identifier: EPL-2.0
 * pg.h: libpq helpers shared by the plugin's threads, chat-rest and
 * chatctl: connecting with a bounded timeout, building array parameters
 * for unnest()-based multi-row statements, and applying migrations.
 * Values always travel as parameters; nothing here formats SQL text.
 */
#ifndef CHAT_PG_H
#define CHAT_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* Connect; conninfo gets connect_timeout=5 unless it sets one. NULL on
 * failure with a one-line reason in err. */
PGconn *chat_pg_connect(const char *conninfo, char *err, size_t errlen);

/* True when the last failure means the server is unreachable (as opposed to
 * a statement error): the caller should reconnect or spool. */
bool chat_pg_conn_lost(PGconn *c);

/* Array literal builder for a text[] / bigint[] parameter. */
struct chat_pgarr {
	struct chat_buf b;
	size_t n;
	bool closed;   /* chat_pgarr_end ran; appending reopens it */
};
int chat_pgarr_str(struct chat_pgarr *a, const char *s); /* NULL -> NULL */
int chat_pgarr_i64(struct chat_pgarr *a, int64_t v);
int chat_pgarr_null(struct chat_pgarr *a);
/* Finish: returns the literal ("{...}"), owned by a. */
const char *chat_pgarr_end(struct chat_pgarr *a);
void chat_pgarr_reset(struct chat_pgarr *a);
void chat_pgarr_free(struct chat_pgarr *a);

/* Parse a text[] value as returned by PostgreSQL ("{a,"b c",NULL}") into a
 * malloc'd array of malloc'd strings (NULL elements become NULL). Returns
 * count or -1. */
long chat_pgarr_parse(const char *lit, char ***out);
void chat_pgarr_parsed_free(char **v, long n);

/* Apply schema/NNN_*.sql files from dir not yet in schema_version, each in
 * its own transaction. partitions is used by 001 only. Returns 0 or -1. */
int chat_pg_migrate(PGconn *c, const char *dir, int partitions, char *err, size_t errlen,
		int *applied);

#endif
