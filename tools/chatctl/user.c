/* SPDX-License-Identifier: EPL-2.0
 * user.c: `chatctl user add|passwd|del|list` and `chatctl token`.
 * The slow PBKDF2 hash is made before the transaction starts, so no lock
 * is held while it runs. `user del` removes everything that belongs to the
 * user (inbox, receipts, read marks, contacts, presence, memberships) and
 * tells the remaining members of each of their groups through
 * group_outbox, in the same transaction; it locks the user's groups before
 * the user row, in the same order as the group commands take their locks.
 */
#include "chatctl.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"
#include "util.h"

/* ---- add / passwd ------------------------------------------------------ */

struct cred_job {
	const char *user;
	const char *pwhash;
	const char *verifier; /* NULL: none */
};

static int add_tx(struct chat_ctl *c, void *arg)
{
	struct cred_job *j = arg;
	const char *v[3] = {j->user, j->pwhash, j->verifier};
	int inserted = chat_ctl__cmd_one(c,
			"INSERT INTO users (id, pwhash, verifier) VALUES ($1, $2, $3) "
			"ON CONFLICT (id) DO NOTHING",
			3, v);
	if(inserted < 0) return CHAT_CTL_FAIL;
	if(!inserted) return chat_ctl__fail(c, "user %s exists", j->user);
	return chat_ctl__cmd(c, "INSERT INTO inbox_counters (user_id, last_seq) VALUES ($1, 0)", 1, v);
}

static int passwd_tx(struct chat_ctl *c, void *arg)
{
	struct cred_job *j = arg;
	const char *v[3] = {j->user, j->pwhash, j->verifier};
	int updated = chat_ctl__cmd_one(c, "UPDATE users SET pwhash = $2, verifier = $3 WHERE id = $1", 3,
			v);
	if(updated < 0) return CHAT_CTL_FAIL;
	if(!updated) return chat_ctl__fail(c, "unknown user %s", j->user);
	return CHAT_CTL_OK;
}

/* 1 exists, 0 does not, -1 error (c->err set). */
static int user_exists(struct chat_ctl *c, const char *user)
{
	const char *v[1] = {user};
	PGresult *r = chat_ctl__exec(c, "SELECT 1 FROM users WHERE id = $1", 1, v, PGRES_TUPLES_OK);
	if(!r) return -1;
	int n = PQntuples(r);
	PQclear(r);
	return n > 0;
}

static int set_credentials(struct chat_ctl *c, const char *user, bool add)
{
	int rc;
	char pw[CHAT_CTL_PW_MAX + 2];
	char pwhash[CHAT_PWHASH_MAX];
	char verifier[CHAT_VERIFIER_MAX];
	struct cred_job job = {user, pwhash, NULL};

	if((rc = chat_ctl__check_id(c, "user", user))) return rc;
	if((rc = chat_ctl__load_secret(c, false))) return rc;
	if((rc = chat_ctl__connect(c))) return rc;

	/* Fail before asking for a password when the answer is known; the
	 * transaction checks again. */
	int ex = user_exists(c, user);
	if(ex < 0) return CHAT_CTL_FAIL;
	if(add && ex) return chat_ctl__fail(c, "user %s exists", user);
	if(!add && !ex) return chat_ctl__fail(c, "unknown user %s", user);

	rc = chat_ctl__read_password(c, user, pw, sizeof pw);
	if(rc) goto cleanup;
	if(chat_pwhash_make(pw, c->iterations, pwhash)){
		rc = chat_ctl__fail(c, "cannot hash the password");
		goto cleanup;
	}
	if(c->secret){
		if(chat_verifier_make(c->secret, user, pw, verifier)){
			rc = chat_ctl__fail(c, "cannot make the MQTT verifier");
			goto cleanup;
		}
		job.verifier = verifier;
	}
	OPENSSL_cleanse(pw, sizeof pw);

	rc = chat_ctl__tx(c, add ? add_tx : passwd_tx, &job);
	if(rc) goto cleanup;
	if(!c->secret){
		fprintf(stderr, "chatctl: warning: no token secret configured, so no MQTT verifier was "
				"stored: %s's first MQTT login will be refused once and then accepted "
				"(slower), after the broker checks the password hash\n", user);
	}
	printf("%s %s\n", add ? "added user" : "changed the password of user", user);
cleanup:
	OPENSSL_cleanse(pw, sizeof pw);
	OPENSSL_cleanse(pwhash, sizeof pwhash);
	OPENSSL_cleanse(verifier, sizeof verifier);
	return rc;
}

/* ---- del ----------------------------------------------------------------- */

struct del_job {
	const char *user;
	int groups; /* groups the user was removed from (for the message) */
};

static bool in_result(PGresult *r, const char *s)
{
	for(int i = 0; i < PQntuples(r); i++){
		if(strcmp(PQgetvalue(r, i, 0), s) == 0) return true;
	}
	return false;
}

/* Tell the remaining members of gid that user is gone. */
static int del_notify_group(struct chat_ctl *c, const char *gid, const char *user, const char *ts)
{
	int rc = CHAT_CTL_FAIL;
	struct chat_pgarr arr = {0};
	const char *v[2] = {gid, user};
	PGresult *r = chat_ctl__exec(c,
			"SELECT user_id FROM group_members WHERE group_id = $1 AND user_id <> $2 "
			"ORDER BY user_id COLLATE \"C\"",
			2, v, PGRES_TUPLES_OK);
	if(!r) goto cleanup;
	if(PQntuples(r) == 0){
		rc = CHAT_CTL_OK; /* nobody left to tell */
		goto cleanup;
	}
	for(int i = 0; i < PQntuples(r); i++){
		if(chat_pgarr_str(&arr, PQgetvalue(r, i, 0))) goto oom;
	}
	const char *lit = chat_pgarr_end(&arr);
	if(!lit) goto oom;
	const char *ov[4] = {gid, user, lit, ts};
	rc = chat_ctl__cmd(c,
			"INSERT INTO group_outbox (group_id, event, user_id, by_user, recipients, ts) "
			"VALUES ($1, 'removed', $2, NULL, $3::text[], $4::bigint)",
			4, ov);
	goto cleanup;
oom:
	rc = chat_ctl__fail(c, "out of memory");
cleanup:
	PQclear(r);
	chat_pgarr_free(&arr);
	return rc;
}

static int del_tx(struct chat_ctl *c, void *arg)
{
	struct del_job *j = arg;
	int rc = CHAT_CTL_FAIL;
	PGresult *locked = NULL, *now = NULL, *r = NULL;
	const char *v[1] = {j->user};
	char ts[24];
	chat_ctl__now_ms_str(ts, sizeof ts);
	j->groups = 0;

	int ex = user_exists(c, j->user);
	if(ex < 0) goto cleanup;
	if(!ex){
		rc = chat_ctl__fail(c, "unknown user %s", j->user);
		goto cleanup;
	}
	/* Groups first (in id order, like every group command), then the
	 * user row, which stops anyone adding the user to another group. */
	locked = chat_ctl__exec(c,
			"SELECT id FROM groups WHERE id IN "
			"(SELECT group_id FROM group_members WHERE user_id = $1) "
			"ORDER BY id COLLATE \"C\" FOR UPDATE",
			1, v, PGRES_TUPLES_OK);
	if(!locked) goto cleanup;
	r = chat_ctl__exec(c, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", 1, v, PGRES_TUPLES_OK);
	if(!r) goto cleanup;
	if(PQntuples(r) == 0){
		rc = chat_ctl__fail(c, "unknown user %s", j->user);
		goto cleanup;
	}
	PQclear(r);
	r = NULL;

	now = chat_ctl__exec(c,
			"SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id COLLATE \"C\"",
			1, v, PGRES_TUPLES_OK);
	if(!now) goto cleanup;
	for(int i = 0; i < PQntuples(now); i++){
		const char *gid = PQgetvalue(now, i, 0);
		if(!in_result(locked, gid)){
			/* joined between the two statements above */
			const char *gv[1] = {gid};
			r = chat_ctl__exec(c, "SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", 1, gv,
					PGRES_TUPLES_OK);
			if(!r) goto cleanup;
			PQclear(r);
			r = NULL;
		}
		if((rc = del_notify_group(c, gid, j->user, ts))) goto cleanup;
		rc = CHAT_CTL_FAIL;
		j->groups++;
	}

	/* Group events still waiting in the outbox must not recreate an inbox
	 * for a user who no longer exists. */
	static const char *const cleanup_sql[] = {
		"DELETE FROM group_outbox WHERE recipients = ARRAY[$1::text]",
		("UPDATE group_outbox SET recipients = array_remove(recipients, $1::text) "
		 "WHERE recipients @> ARRAY[$1::text]"),
		"DELETE FROM messages WHERE user_id = $1",
		"DELETE FROM receipts WHERE user_id = $1",
		"DELETE FROM read_marks WHERE user_id = $1",
		"DELETE FROM contacts WHERE user_id = $1 OR peer = $1",
		"DELETE FROM presence WHERE user_id = $1",
		/* inbox_counters and group_members cascade */
		"DELETE FROM users WHERE id = $1",
	};
	for(size_t i = 0; i < sizeof cleanup_sql / sizeof cleanup_sql[0]; i++){
		if(chat_ctl__cmd(c, cleanup_sql[i], 1, v)) goto cleanup;
	}
	rc = CHAT_CTL_OK;
cleanup:
	PQclear(locked);
	PQclear(now);
	PQclear(r);
	return rc;
}

static int user_del(struct chat_ctl *c, const char *user)
{
	int rc;
	struct del_job job = {user, 0};
	if((rc = chat_ctl__check_id(c, "user", user))) return rc;
	if((rc = chat_ctl__connect(c))) return rc;
	if((rc = chat_ctl__tx(c, del_tx, &job))) return rc;
	printf("deleted user %s (removed from %d group%s)\n", user, job.groups,
			job.groups == 1 ? "" : "s");
	return CHAT_CTL_OK;
}

/* ---- list ---------------------------------------------------------------- */

static int user_list(struct chat_ctl *c)
{
	int rc;
	if((rc = chat_ctl__connect(c))) return rc;
	PGresult *r = chat_ctl__exec(c, "SELECT id FROM users ORDER BY id COLLATE \"C\"", 0, NULL,
			PGRES_TUPLES_OK);
	if(!r) return CHAT_CTL_FAIL;
	for(int i = 0; i < PQntuples(r); i++) printf("%s\n", PQgetvalue(r, i, 0));
	PQclear(r);
	return CHAT_CTL_OK;
}

int chat_ctl__cmd_user(struct chat_ctl *c, int argc, char **argv)
{
	const char *pos[1];
	int npos, rc;
	if(argc < 1) return chat_ctl__usage(c, "user: missing subcommand (add, passwd, del, list)");
	const char *sub = argv[0];
	bool list = strcmp(sub, "list") == 0;
	if(strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) return CHAT_CTL_HELP;
	if(!list && strcmp(sub, "add") && strcmp(sub, "passwd") && strcmp(sub, "del")){
		char shown[CHAT_CTL_SHOWN_MAX];
		return chat_ctl__usage(c, "user: unknown subcommand \"%s\" (add, passwd, del, list)",
				chat_ctl__shown(sub, shown, sizeof shown));
	}
	rc = chat_ctl__args(c, argc - 1, argv + 1, NULL, pos, list ? 0 : 1, list ? 0 : 1, &npos);
	if(rc) return rc;
	if(list) return user_list(c);
	if(strcmp(sub, "add") == 0) return set_credentials(c, pos[0], true);
	if(strcmp(sub, "passwd") == 0) return set_credentials(c, pos[0], false);
	return user_del(c, pos[0]);
}

/* ---- token --------------------------------------------------------------- */

int chat_ctl__cmd_token(struct chat_ctl *c, int argc, char **argv)
{
	const char *ttl_s = NULL;
	const struct chat_ctl_opt opts[] = {{"--ttl", &ttl_s}, {NULL, NULL}};
	const char *pos[1];
	int npos, rc;
	long long ttl = 86400;

	if((rc = chat_ctl__args(c, argc, argv, opts, pos, 1, 1, &npos))) return rc;
	/* up to ten years */
	if(ttl_s && (rc = chat_ctl__int_opt(c, "--ttl", ttl_s, 1, 315360000LL, &ttl))) return rc;
	const char *user = pos[0];
	if((rc = chat_ctl__check_id(c, "user", user))) return rc;
	if((rc = chat_ctl__load_secret(c, true))) return rc;
	if((rc = chat_ctl__connect(c))) return rc;

	const char *v[1] = {user};
	PGresult *r = chat_ctl__exec(c, "SELECT disabled FROM users WHERE id = $1", 1, v,
			PGRES_TUPLES_OK);
	if(!r) return CHAT_CTL_FAIL;
	bool found = PQntuples(r) == 1;
	bool disabled = found && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	PQclear(r);
	if(!found) return chat_ctl__fail(c, "unknown user %s", user);
	if(disabled) return chat_ctl__fail(c, "user %s is disabled", user);

	char token[CHAT_TOKEN_MAX];
	int64_t exp;
	if(chat_token_issue(c->secret, user, chat_now_ms() / 1000, ttl, token, &exp))
		return chat_ctl__fail(c, "cannot issue a token");
	printf("%s\n", token);
	OPENSSL_cleanse(token, sizeof token);
	return CHAT_CTL_OK;
}
