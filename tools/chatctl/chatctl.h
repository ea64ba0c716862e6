/* SPDX-License-Identifier: EPL-2.0
 * chatctl.h: what the chatctl command files share: the run context (global
 * options, resolved settings, the database connection, the last error),
 * the exit codes, and small helpers for parameterised SQL, transactions,
 * argument parsing and password input. chatctl is single-threaded and
 * short-lived, but still frees everything (the tests run it under ASan).
 * Every id is checked with chat_id_valid before it reaches SQL, and every
 * value travels as a query parameter: no SQL text is built from arguments.
 */
#ifndef CHAT_CTL_H
#define CHAT_CTL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "conf.h"

/* Exit codes (and CHAT_CTL_HELP, which main turns into 0). */
#define CHAT_CTL_OK 0
#define CHAT_CTL_FAIL 1
#define CHAT_CTL_USAGE 2
#define CHAT_CTL_HELP 3 /* --help seen: usage printed, exit 0 */

#define CHAT_CTL_PW_MAX 1024
#define CHAT_CTL_ERR_MAX 1024

struct chat_ctl {
	/* global options (borrowed from argv) */
	const char *db_opt;
	const char *secret_opt;
	const char *schema_dir;
	unsigned iterations;

	/* the defaults file, loaded on first need */
	bool defaults_tried;
	bool defaults_ok;
	const char *defaults_path;
	struct chat_conf defaults;

	PGconn *db;
	struct chat_secret *secret; /* malloc'd, cleansed before free; NULL: none */
	char *secret_path;          /* malloc'd */

	/* last error: one line, printed by main as "chatctl: <err>" */
	char err[CHAT_CTL_ERR_MAX];
	char sqlstate[6];
	bool retry;
};

/* Set c->err and return CHAT_CTL_FAIL / CHAT_CTL_USAGE. */
int chat_ctl__fail(struct chat_ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int chat_ctl__usage(struct chat_ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A printable rendering of an untrusted argument for an error message:
 * non-printable bytes as \xNN, cut after 72 characters. Returns out. */
const char *chat_ctl__shown(const char *s, char *out, size_t outlen);
#define CHAT_CTL_SHOWN_MAX 300

/* Validate an id argument: CHAT_CTL_OK, or CHAT_CTL_FAIL with
 * "invalid <what> id ..." in c->err. */
int chat_ctl__check_id(struct chat_ctl *c, const char *what, const char *id);

/* Connect (the database resolution order is in chatctl.c). */
int chat_ctl__connect(struct chat_ctl *c);
/* Load the token secret if one is configured. required: a missing secret
 * is an error; otherwise c->secret stays NULL. A configured secret that
 * cannot be loaded is always an error. */
int chat_ctl__load_secret(struct chat_ctl *c, bool required);

/* Run a parameterised statement. Returns the result when its status is
 * want (the caller PQclear()s it), else NULL with c->err, c->sqlstate and
 * c->retry set. */
PGresult *chat_ctl__exec(struct chat_ctl *c, const char *sql, int n, const char *const *vals,
		ExecStatusType want);
/* Same for a command whose result is not needed: CHAT_CTL_OK or _FAIL. */
int chat_ctl__cmd(struct chat_ctl *c, const char *sql, int n, const char *const *vals);
/* A command that should touch exactly one row: 1 it did, 0 it touched
 * none (or several), -1 error (c->err set). */
int chat_ctl__cmd_one(struct chat_ctl *c, const char *sql, int n, const char *const *vals);

/* Run fn inside BEGIN ... COMMIT; roll back when it fails. A deadlock or
 * serialisation failure reruns fn (a few times), so fn must not print. */
typedef int (*chat_ctl_tx_fn)(struct chat_ctl *c, void *arg);
int chat_ctl__tx(struct chat_ctl *c, chat_ctl_tx_fn fn, void *arg);

/* Arguments after a command: options from opts (each takes a value,
 * "--opt V" or "--opt=V"), "--" ends options, the rest are positional
 * (at least minpos, at most maxpos). CHAT_CTL_HELP on -h/--help. */
struct chat_ctl_opt {
	const char *name;
	const char **val;
};
int chat_ctl__args(struct chat_ctl *c, int argc, char **argv, const struct chat_ctl_opt *opts,
		const char **pos, int minpos, int maxpos, int *npos);

/* Parse a decimal integer option in [min, max]; CHAT_CTL_USAGE if not. */
int chat_ctl__int_opt(struct chat_ctl *c, const char *name, const char *s, long long min,
		long long max, long long *out);

/* Read a new password: the first line of stdin (trailing \r\n stripped),
 * or, on a terminal, prompted twice on stderr with echo off. buf holds
 * CHAT_CTL_PW_MAX + 2 bytes; the caller cleanses it. */
int chat_ctl__read_password(struct chat_ctl *c, const char *user, char *buf, size_t buflen);

/* ms since the epoch as a decimal string (out >= 24 bytes). */
void chat_ctl__now_ms_str(char *out, size_t outlen);

/* Commands. argv[0] is the word after "user" / "group" / the command. */
int chat_ctl__cmd_user(struct chat_ctl *c, int argc, char **argv);
int chat_ctl__cmd_token(struct chat_ctl *c, int argc, char **argv);
int chat_ctl__cmd_group(struct chat_ctl *c, int argc, char **argv);

extern const char chat_ctl__usage_text[];

#endif
