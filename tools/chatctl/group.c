/* SPDX-License-Identifier: EPL-2.0
 * group.c: `chatctl group create|add|remove|del|list`.
 * Each change runs in one transaction that first locks the group row
 * (SELECT ... FOR UPDATE), then changes group_members and inserts the
 * group_outbox rows whose recipients were read under that lock, so
 * concurrent runs never produce a recipient list that misses a member.
 * The broker's writer turns outbox rows into inbox events (with seq);
 * by_user is NULL: an administrator did it.
 *   created: user = owner, recipients = {owner}
 *   added:   user = NAME,  recipients = every member, NAME included
 *   removed: user = NAME,  recipients = NAME and the remaining members
 *   del:     one `removed` row per member, recipients = every member
 */
#include "chatctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

struct group_job {
	const char *gid;
	const char *user; /* owner for create, member for add/remove */
	int members;      /* del: how many members were told */
	char ts[24];
};

/* Lock the group row. CHAT_CTL_OK, or _FAIL ("unknown group"). */
static int lock_group(struct chat_ctl *c, const char *gid)
{
	const char *v[1] = {gid};
	PGresult *r = chat_ctl__exec(c, "SELECT 1 FROM groups WHERE id = $1 FOR UPDATE", 1, v,
			PGRES_TUPLES_OK);
	if(!r) return CHAT_CTL_FAIL;
	int n = PQntuples(r);
	PQclear(r);
	if(n == 0) return chat_ctl__fail(c, "unknown group %s", gid);
	return CHAT_CTL_OK;
}

/* The members of gid, sorted. NULL on error. */
static PGresult *members(struct chat_ctl *c, const char *gid)
{
	const char *v[1] = {gid};
	return chat_ctl__exec(c,
			"SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY user_id COLLATE \"C\"",
			1, v, PGRES_TUPLES_OK);
}

/* first (if not NULL) then every member in r, as a text[] literal in arr. */
static int recipients(struct chat_ctl *c, struct chat_pgarr *arr, const char *first, PGresult *r,
		const char **lit)
{
	if(first && chat_pgarr_str(arr, first)) goto oom;
	for(int i = 0; i < PQntuples(r); i++){
		const char *m = PQgetvalue(r, i, 0);
		if(first && strcmp(m, first) == 0) continue;
		if(chat_pgarr_str(arr, m)) goto oom;
	}
	if(!(*lit = chat_pgarr_end(arr))) goto oom;
	return CHAT_CTL_OK;
oom:
	return chat_ctl__fail(c, "out of memory");
}

static int outbox(struct chat_ctl *c, const char *gid, const char *event, const char *user,
		const char *lit, const char *ts)
{
	const char *v[5] = {gid, event, user, lit, ts};
	return chat_ctl__cmd(c,
			"INSERT INTO group_outbox (group_id, event, user_id, by_user, recipients, ts) "
			"VALUES ($1, $2, $3, NULL, $4::text[], $5::bigint)",
			5, v);
}

/* CHAT_CTL_OK when the user exists, else _FAIL. */
static int need_user(struct chat_ctl *c, const char *user, bool lock)
{
	const char *v[1] = {user};
	PGresult *r = chat_ctl__exec(c,
			lock ? "SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE"
			     : "SELECT 1 FROM users WHERE id = $1",
			1, v, PGRES_TUPLES_OK);
	if(!r) return CHAT_CTL_FAIL;
	int n = PQntuples(r);
	PQclear(r);
	if(n == 0) return chat_ctl__fail(c, "unknown user %s", user);
	return CHAT_CTL_OK;
}

/* ---- create -------------------------------------------------------------- */

static int create_tx(struct chat_ctl *c, void *arg)
{
	struct group_job *j = arg;
	int rc;
	struct chat_pgarr arr = {0};
	const char *lit;

	if((rc = need_user(c, j->user, true))) return rc;
	/* A group id used before keeps its stored message bodies (members'
	 * history points at them): continue its gseq so new messages never
	 * clash with them. */
	const char *v[2] = {j->gid, j->user};
	int inserted = chat_ctl__cmd_one(c,
			"INSERT INTO groups (id, owner, last_gseq) VALUES ($1, $2, "
			"COALESCE((SELECT max(gseq) FROM group_messages WHERE group_id = $1), 0)) "
			"ON CONFLICT (id) DO NOTHING",
			2, v);
	if(inserted < 0) return CHAT_CTL_FAIL;
	if(!inserted) return chat_ctl__fail(c, "group %s exists", j->gid);
	if((rc = chat_ctl__cmd(c, "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)", 2, v)))
		return rc;
	if(chat_pgarr_str(&arr, j->user) || !(lit = chat_pgarr_end(&arr))){
		rc = chat_ctl__fail(c, "out of memory");
	}else{
		rc = outbox(c, j->gid, "created", j->user, lit, j->ts);
	}
	chat_pgarr_free(&arr);
	return rc;
}

/* ---- add / remove -------------------------------------------------------- */

static int add_tx(struct chat_ctl *c, void *arg)
{
	struct group_job *j = arg;
	int rc;
	struct chat_pgarr arr = {0};
	const char *lit;
	PGresult *m = NULL;

	if((rc = lock_group(c, j->gid))) return rc;
	if((rc = need_user(c, j->user, true))) return rc;
	const char *v[2] = {j->gid, j->user};
	int inserted = chat_ctl__cmd_one(c,
			"INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
			2, v);
	if(inserted < 0) return CHAT_CTL_FAIL;
	if(!inserted) return chat_ctl__fail(c, "user %s is already a member of group %s", j->user, j->gid);

	if(!(m = members(c, j->gid))) return CHAT_CTL_FAIL;
	rc = recipients(c, &arr, NULL, m, &lit);
	if(rc == CHAT_CTL_OK) rc = outbox(c, j->gid, "added", j->user, lit, j->ts);
	PQclear(m);
	chat_pgarr_free(&arr);
	return rc;
}

static int remove_tx(struct chat_ctl *c, void *arg)
{
	struct group_job *j = arg;
	int rc;
	struct chat_pgarr arr = {0};
	const char *lit;
	PGresult *m = NULL;

	if((rc = lock_group(c, j->gid))) return rc;
	const char *v[2] = {j->gid, j->user};
	int deleted = chat_ctl__cmd_one(c, "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
			2, v);
	if(deleted < 0) return CHAT_CTL_FAIL;
	if(!deleted) return chat_ctl__fail(c, "user %s is not a member of group %s", j->user, j->gid);

	if(!(m = members(c, j->gid))) return CHAT_CTL_FAIL;
	rc = recipients(c, &arr, j->user, m, &lit);
	if(rc == CHAT_CTL_OK) rc = outbox(c, j->gid, "removed", j->user, lit, j->ts);
	PQclear(m);
	chat_pgarr_free(&arr);
	return rc;
}

/* ---- del ----------------------------------------------------------------- */

static int del_tx(struct chat_ctl *c, void *arg)
{
	struct group_job *j = arg;
	int rc;
	struct chat_pgarr arr = {0};
	const char *lit;
	PGresult *m = NULL;

	j->members = 0;
	if((rc = lock_group(c, j->gid))) return rc;
	if(!(m = members(c, j->gid))) return CHAT_CTL_FAIL;
	if(PQntuples(m) > 0){
		rc = recipients(c, &arr, NULL, m, &lit);
		for(int i = 0; rc == CHAT_CTL_OK && i < PQntuples(m); i++){
			rc = outbox(c, j->gid, "removed", PQgetvalue(m, i, 0), lit, j->ts);
			j->members++;
		}
	}
	if(rc == CHAT_CTL_OK){
		const char *v[1] = {j->gid};
		rc = chat_ctl__cmd(c, "DELETE FROM groups WHERE id = $1", 1, v); /* members cascade */
	}
	PQclear(m);
	chat_pgarr_free(&arr);
	return rc;
}

/* ---- list ---------------------------------------------------------------- */

static int group_list(struct chat_ctl *c, const char *user)
{
	int rc;
	PGresult *r;
	if(user && (rc = chat_ctl__check_id(c, "user", user))) return rc;
	if((rc = chat_ctl__connect(c))) return rc;
	if(user){
		if((rc = need_user(c, user, false))) return rc;
		const char *v[1] = {user};
		r = chat_ctl__exec(c,
				"SELECT group_id FROM group_members WHERE user_id = $1 "
				"ORDER BY group_id COLLATE \"C\"",
				1, v, PGRES_TUPLES_OK);
		if(!r) return CHAT_CTL_FAIL;
		for(int i = 0; i < PQntuples(r); i++) printf("%s\n", PQgetvalue(r, i, 0));
	}else{
		r = chat_ctl__exec(c,
				"SELECT g.id, g.owner, count(m.user_id) FROM groups g "
				"LEFT JOIN group_members m ON m.group_id = g.id "
				"GROUP BY g.id, g.owner ORDER BY g.id COLLATE \"C\"",
				0, NULL, PGRES_TUPLES_OK);
		if(!r) return CHAT_CTL_FAIL;
		for(int i = 0; i < PQntuples(r); i++){
			printf("%s owner=%s members=%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
					PQgetvalue(r, i, 2));
		}
	}
	PQclear(r);
	return CHAT_CTL_OK;
}

/* ---- dispatch ------------------------------------------------------------ */

int chat_ctl__cmd_group(struct chat_ctl *c, int argc, char **argv)
{
	static const char subs[] = "create, add, remove, del, list";
	const char *owner = NULL;
	const struct chat_ctl_opt create_opts[] = {{"--owner", &owner}, {NULL, NULL}};
	const char *pos[2];
	int npos, rc;
	struct group_job job;
	chat_ctl_tx_fn fn;

	if(argc < 1) return chat_ctl__usage(c, "group: missing subcommand (%s)", subs);
	const char *sub = argv[0];
	if(strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) return CHAT_CTL_HELP;
	argc--;
	argv++;

	memset(&job, 0, sizeof job);
	if(strcmp(sub, "list") == 0){
		if((rc = chat_ctl__args(c, argc, argv, NULL, pos, 0, 1, &npos))) return rc;
		return group_list(c, npos ? pos[0] : NULL);
	}else if(strcmp(sub, "create") == 0){
		if((rc = chat_ctl__args(c, argc, argv, create_opts, pos, 1, 1, &npos))) return rc;
		if(!owner) return chat_ctl__usage(c, "group create: --owner NAME is required");
		job.user = owner;
		fn = create_tx;
	}else if(strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0){
		if((rc = chat_ctl__args(c, argc, argv, NULL, pos, 2, 2, &npos))) return rc;
		job.user = pos[1];
		fn = sub[0] == 'a' ? add_tx : remove_tx;
	}else if(strcmp(sub, "del") == 0){
		if((rc = chat_ctl__args(c, argc, argv, NULL, pos, 1, 1, &npos))) return rc;
		fn = del_tx;
	}else{
		char shown[CHAT_CTL_SHOWN_MAX];
		return chat_ctl__usage(c, "group: unknown subcommand \"%s\" (%s)",
				chat_ctl__shown(sub, shown, sizeof shown), subs);
	}
	job.gid = pos[0];
	if((rc = chat_ctl__check_id(c, "group", job.gid))) return rc;
	if(job.user && (rc = chat_ctl__check_id(c, "user", job.user))) return rc;
	if((rc = chat_ctl__connect(c))) return rc;
	chat_ctl__now_ms_str(job.ts, sizeof job.ts);
	if((rc = chat_ctl__tx(c, fn, &job))) return rc;

	if(fn == create_tx) printf("created group %s (owner %s)\n", job.gid, job.user);
	else if(fn == add_tx) printf("added %s to group %s\n", job.user, job.gid);
	else if(fn == remove_tx) printf("removed %s from group %s\n", job.user, job.gid);
	else printf("deleted group %s (%d member%s told)\n", job.gid, job.members, job.members == 1 ? "" : "s");
	return CHAT_CTL_OK;
}
