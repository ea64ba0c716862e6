/* SPDX-License-Identifier: EPL-2.0
 * membership.c: the directory thread and its snapshots.
 * It owns a second PostgreSQL connection that LISTENs on chat_directory
 * (triggers on users, groups, group_members and group_outbox notify it,
 * whatever tool made the change) and reloads users and memberships into a
 * fresh snapshot, which the broker thread swaps in at its next tick. The
 * broker thread therefore answers auth and ACL from memory and never waits
 * on the database. It also runs the slow PBKDF2 check for users without a
 * usable verifier, and tells the writer when group_outbox has rows.
 */
#include "chat.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>

#include "pg.h"
#include "util.h"

struct slow_auth {
	struct slow_auth *next;
	char user[CHAT_ID_MAX + 1];
	char *password;
};

struct chat_dirthread {
	struct chat_plugin *p;
	pthread_t thread;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	struct chat_dir *ready;   /* newest snapshot not yet taken */
	bool loaded_once;
	bool first_failed;
	char first_err[256];
	struct slow_auth *slow;
	size_t nslow;
	int pipefd[2];

	/* directory thread only */
	PGconn *pg;
	bool need_reload;
	bool first_done;
	bool outbox_pending;
	bool users_pending;
	int64_t next_reload_ns, next_connect_ns;
};

static void group_free(struct chat_group *g)
{
	if(!g) return;
	chat_hmap_free(&g->members);
	for(size_t i = 0; i < g->nmembers; i++) free(g->member_ids[i]);
	free(g->member_ids);
	free(g);
}

void chat_dir__free(struct chat_dir *d)
{
	if(!d) return;
	size_t it = 0;
	void *v;
	while(chat_hmap_next(&d->users, &it, NULL, NULL, &v)){
		struct chat_user *u = v;
		free(u->groups);
		free(u);
	}
	chat_hmap_free(&d->users);
	it = 0;
	while(chat_hmap_next(&d->groups, &it, NULL, NULL, &v)) group_free(v);
	chat_hmap_free(&d->groups);
	free(d->contacts);
	free(d->presence);
	free(d);
}

static int user_add_group(struct chat_user *u, struct chat_group *g)
{
	struct chat_group **n = realloc(u->groups, (u->ngroups + 1) * sizeof *n);
	if(!n) return -1;
	u->groups = n;
	u->groups[u->ngroups++] = g;
	return 0;
}

static struct chat_dir *load(struct chat_dirthread *t, bool first, char *err, size_t errlen)
{
	struct chat_dir *d = calloc(1, sizeof *d);
	PGresult *r = NULL;
	if(!d) return NULL;
	chat_hmap_init(&d->users);
	chat_hmap_init(&d->groups);
	d->first = first;

	/* Read the outbox high-water mark before the memberships: every row up
	 * to it committed together with its membership change, which the
	 * reads below therefore see. */
	if(t->outbox_pending){
		r = PQexec(t->pg, "SELECT COALESCE(max(id), 0) FROM group_outbox");
		if(PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
		d->outbox_upto = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
	}
	d->users_changed = t->users_pending;

	r = PQexec(t->pg, "SELECT id, COALESCE(verifier, ''), disabled FROM users");
	if(PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
	for(int i = 0; i < PQntuples(r); i++){
		struct chat_user *u = calloc(1, sizeof *u);
		if(!u) goto oom;
		snprintf(u->id, sizeof u->id, "%s", PQgetvalue(r, i, 0));
		snprintf(u->verifier, sizeof u->verifier, "%s", PQgetvalue(r, i, 1));
		u->disabled = PQgetvalue(r, i, 2)[0] == 't';
		if(chat_hmap_put(&d->users, u->id, u, NULL)){
			free(u);
			goto oom;
		}
	}
	PQclear(r);

	r = PQexec(t->pg, "SELECT group_id, user_id FROM group_members ORDER BY group_id, added_at, user_id");
	if(PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
	for(int i = 0; i < PQntuples(r); i++){
		const char *gid = PQgetvalue(r, i, 0), *uid = PQgetvalue(r, i, 1);
		struct chat_group *g = chat_hmap_get(&d->groups, gid);
		if(!g){
			g = calloc(1, sizeof *g);
			if(!g) goto oom;
			snprintf(g->id, sizeof g->id, "%s", gid);
			chat_hmap_init(&g->members);
			if(chat_hmap_put(&d->groups, g->id, g, NULL)){
				free(g);
				goto oom;
			}
		}
		char **m = realloc(g->member_ids, (g->nmembers + 1) * sizeof *m);
		if(!m) goto oom;
		g->member_ids = m;
		g->member_ids[g->nmembers] = strdup(uid);
		if(!g->member_ids[g->nmembers]) goto oom;
		g->nmembers++;
		if(chat_hmap_put(&g->members, uid, (void *)1, NULL)) goto oom;
		struct chat_user *u = chat_hmap_get(&d->users, uid);
		if(u && user_add_group(u, g)) goto oom;
	}
	PQclear(r);
	/* groups without members (possible after removals) still exist */
	r = PQexec(t->pg, "SELECT id FROM groups");
	if(PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
	for(int i = 0; i < PQntuples(r); i++){
		const char *gid = PQgetvalue(r, i, 0);
		if(chat_hmap_get(&d->groups, gid)) continue;
		struct chat_group *g = calloc(1, sizeof *g);
		if(!g) goto oom;
		snprintf(g->id, sizeof g->id, "%s", gid);
		chat_hmap_init(&g->members);
		if(chat_hmap_put(&d->groups, g->id, g, NULL)){
			free(g);
			goto oom;
		}
	}
	PQclear(r);
	r = NULL;

	if(first){
		r = PQexec(t->pg, "SELECT user_id, peer FROM contacts");
		if(PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
		int n = PQntuples(r);
		d->contacts = calloc(n ? (size_t)n : 1, sizeof *d->contacts);
		if(!d->contacts) goto oom;
		for(int i = 0; i < n; i++){
			snprintf(d->contacts[i][0], CHAT_ID_MAX + 1, "%s", PQgetvalue(r, i, 0));
			snprintf(d->contacts[i][1], CHAT_ID_MAX + 1, "%s", PQgetvalue(r, i, 1));
		}
		d->ncontacts = (size_t)n;
		PQclear(r);
		r = PQexec(t->pg, "SELECT user_id, status, COALESCE(last_seen, 0) FROM presence");
		if(PQresultStatus(r) != PGRES_TUPLES_OK) goto dberr;
		n = PQntuples(r);
		d->presence = calloc(n ? (size_t)n : 1, sizeof *d->presence);
		if(!d->presence) goto oom;
		for(int i = 0; i < n; i++){
			snprintf(d->presence[i].user, CHAT_ID_MAX + 1, "%s", PQgetvalue(r, i, 0));
			d->presence[i].online = strcmp(PQgetvalue(r, i, 1), "online") == 0;
			d->presence[i].last_seen = strtoll(PQgetvalue(r, i, 2), NULL, 10);
		}
		d->npresence = (size_t)n;
		PQclear(r);
		r = NULL;
	}
	return d;
dberr:
	snprintf(err, errlen, "%s", PQresultErrorMessage(r));
	PQclear(r);
	chat_dir__free(d);
	return NULL;
oom:
	snprintf(err, errlen, "out of memory");
	PQclear(r);
	chat_dir__free(d);
	return NULL;
}

static void publish_snapshot(struct chat_dirthread *t, struct chat_dir *d)
{
	pthread_mutex_lock(&t->mu);
	if(t->ready){
		/* the broker has not taken the previous one: the new one replaces
		 * it, but a pending first load's extras must survive */
		if(t->ready->first){
			d->first = true;
			if(!d->contacts){
				d->contacts = t->ready->contacts;
				d->ncontacts = t->ready->ncontacts;
				t->ready->contacts = NULL;
			}
			if(!d->presence){
				d->presence = t->ready->presence;
				d->npresence = t->ready->npresence;
				t->ready->presence = NULL;
			}
		}
		if(t->ready->outbox_upto > d->outbox_upto) d->outbox_upto = t->ready->outbox_upto;
		d->users_changed |= t->ready->users_changed;
		chat_dir__free(t->ready);
	}
	t->ready = d;
	t->loaded_once = true;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

static void db_close(struct chat_dirthread *t)
{
	if(t->pg) PQfinish(t->pg);
	t->pg = NULL;
}

static void check_slow(struct chat_dirthread *t, struct slow_auth *a)
{
	const char *v[1] = {a->user};
	PGresult *r = PQexecParams(t->pg, "SELECT pwhash FROM users WHERE id = $1 AND NOT disabled", 1, NULL, v,
			NULL, NULL, 0);
	if(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
			&& chat_pwhash_verify(a->password, PQgetvalue(r, 0, 0)) == 0){
		char ver[CHAT_VERIFIER_MAX];
		if(chat_verifier_make(&t->p->secret, a->user, a->password, ver) == 0){
			const char *uv[2] = {a->user, ver};
			PGresult *u = PQexecParams(t->pg, "UPDATE users SET verifier = $2 WHERE id = $1", 2, NULL, uv, NULL,
					NULL, 0);
			PQclear(u);
			chat_store__log(t->p, MOSQ_LOG_INFO, "chat: auth | %s | verifier refreshed", a->user);
		}
	}
	PQclear(r);
}

static void take_notifies(struct chat_dirthread *t)
{
	PGnotify *nt;
	while((nt = PQnotifies(t->pg))){
		if(strcmp(nt->extra, "group_outbox") == 0) t->outbox_pending = true;
		if(strcmp(nt->extra, "users") == 0 || strcmp(nt->extra, "groups") == 0) t->users_pending = true;
		t->need_reload = true;
		PQfreemem(nt);
	}
}

static void *dir_main(void *arg)
{
	struct chat_dirthread *t = arg;
	struct chat_plugin *p = t->p;
	char err[512];
	for(;;){
		pthread_mutex_lock(&t->mu);
		bool stop = t->stop;
		struct slow_auth *slow = t->slow;
		t->slow = NULL;
		t->nslow = 0;
		pthread_mutex_unlock(&t->mu);
		if(stop){
			while(slow){
				struct slow_auth *n = slow->next;
				OPENSSL_cleanse(slow->password, strlen(slow->password));
				free(slow->password);
				free(slow);
				slow = n;
			}
			break;
		}
		int64_t now = chat_mono_ns();
		if(!t->pg && now >= t->next_connect_ns){
			t->pg = chat_pg_connect(p->cfg.db_conninfo, err, sizeof err);
			if(t->pg){
				PGresult *r = PQexec(t->pg, "LISTEN chat_directory");
				PQclear(r);
				t->need_reload = true;
			}else{
				t->next_connect_ns = now + 1000000000LL;
				pthread_mutex_lock(&t->mu);
				if(!t->loaded_once){
					t->first_failed = true;
					snprintf(t->first_err, sizeof t->first_err, "%.200s", err);
					pthread_cond_broadcast(&t->cv);
				}
				pthread_mutex_unlock(&t->mu);
			}
		}
		while(slow){
			struct slow_auth *n = slow->next;
			if(t->pg) check_slow(t, slow);
			OPENSSL_cleanse(slow->password, strlen(slow->password));
			free(slow->password);
			free(slow);
			slow = n;
		}
		if(t->pg && (t->need_reload || now >= t->next_reload_ns)){
			struct chat_dir *d = load(t, !t->first_done, err, sizeof err);
			if(d){
				t->first_done = true;
				t->need_reload = false;
				if(d->outbox_upto) t->outbox_pending = false;
				t->users_pending = false;
				t->next_reload_ns = now + (int64_t)p->cfg.refresh_s * 1000000000LL;
				publish_snapshot(t, d);
			}else{
				chat_store__log(p, MOSQ_LOG_WARNING, "chat: directory: reload failed: %s", err);
				t->need_reload = false;       /* retried by the timer, not in a tight loop */
				t->next_reload_ns = now + 1000000000LL;
				if(chat_pg_conn_lost(t->pg)) db_close(t);
			}
		}

		/* Notifications that arrived while a query ran were read off the
		 * socket by libpq already: collect them before waiting on it, or
		 * the change would wait for the periodic reload. */
		if(t->pg) take_notifies(t);
		struct pollfd fds[2] = {{t->pipefd[0], POLLIN, 0}, {t->pg ? PQsocket(t->pg) : -1, POLLIN, 0}};
		int n = poll(fds, t->pg ? 2 : 1, t->need_reload ? 0 : (t->pg ? 1000 : 250));
		if(n > 0 && (fds[0].revents & POLLIN)){
			char buf[64];
			while(read(t->pipefd[0], buf, sizeof buf) > 0){}
		}
		if(t->pg && n > 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))){
			if(!PQconsumeInput(t->pg)){
				db_close(t);
				continue;
			}
			take_notifies(t);
		}
		if(t->pg && chat_pg_conn_lost(t->pg)) db_close(t);
	}
	db_close(t);
	return NULL;
}

int chat_dirthread__start(struct chat_plugin *p)
{
	struct chat_dirthread *t = calloc(1, sizeof *t);
	if(!t) return -1;
	t->p = p;
	t->pipefd[0] = t->pipefd[1] = -1;
	p->dirt = t;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	if(pipe(t->pipefd)) return -1;
	for(int i = 0; i < 2; i++){
		fcntl(t->pipefd[i], F_SETFL, O_NONBLOCK);
		fcntl(t->pipefd[i], F_SETFD, FD_CLOEXEC);
	}
	if(pthread_create(&t->thread, NULL, dir_main, t)) return -1;
	t->started = true;

	/* Wait (bounded) for the first load, so that users can log in as soon
	 * as the broker opens its listeners. Start-up only: no client is
	 * connected yet. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&t->mu);
	while(!t->loaded_once && !t->first_failed){
		if(pthread_cond_timedwait(&t->cv, &t->mu, &ts) == ETIMEDOUT) break;
	}
	bool ok = t->loaded_once;
	pthread_mutex_unlock(&t->mu);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "chat: directory: postgres unreachable at start (%s); users can log "
				"in once it is back", t->first_err[0] ? t->first_err : "timed out");
	}
	struct chat_dir *d = chat_dirthread__take(p);
	if(d) chat_tick__apply_dir(p, d);
	return 0;
}

void chat_dirthread__stop(struct chat_plugin *p)
{
	struct chat_dirthread *t = p->dirt;
	if(!t) return;
	if(t->started){
		pthread_mutex_lock(&t->mu);
		t->stop = true;
		pthread_mutex_unlock(&t->mu);
		if(write(t->pipefd[1], "x", 1) < 0){ /* the poll times out anyway */ }
		pthread_join(t->thread, NULL);
	}
	chat_dir__free(t->ready);
	if(t->pipefd[0] >= 0) close(t->pipefd[0]);
	if(t->pipefd[1] >= 0) close(t->pipefd[1]);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t);
	p->dirt = NULL;
}

struct chat_dir *chat_dirthread__take(struct chat_plugin *p)
{
	struct chat_dirthread *t = p->dirt;
	if(!t) return NULL;
	pthread_mutex_lock(&t->mu);
	struct chat_dir *d = t->ready;
	t->ready = NULL;
	pthread_mutex_unlock(&t->mu);
	return d;
}

void chat_dirthread__slow_auth(struct chat_plugin *p, const char *user, const char *password)
{
	struct chat_dirthread *t = p->dirt;
	if(!t) return;
	struct slow_auth *a = calloc(1, sizeof *a);
	if(!a) return;
	snprintf(a->user, sizeof a->user, "%s", user);
	a->password = strdup(password);
	if(!a->password){
		free(a);
		return;
	}
	pthread_mutex_lock(&t->mu);
	if(t->nslow >= 64){ /* a flood of bad logins must not queue unbounded hashing */
		pthread_mutex_unlock(&t->mu);
		OPENSSL_cleanse(a->password, strlen(a->password));
		free(a->password);
		free(a);
		return;
	}
	a->next = t->slow;
	t->slow = a;
	t->nslow++;
	pthread_mutex_unlock(&t->mu);
	if(write(t->pipefd[1], "x", 1) < 0){ /* full pipe: already awake */ }
}
