/* SPDX-License-Identifier: EPL-2.0
 * pg.c: see pg.h.
 */
#include "pg.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

PGconn *chat_pg_connect(const char *conninfo, char *err, size_t errlen)
{
	/* dbname comes last: with expand_dbname a conninfo string there
	 * overrides the defaults before it (libpq keeps the last value). */
	const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
	const char *vals[] = {"5", "mosquitto-chat", conninfo ? conninfo : "", NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if(!c){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if(PQstatus(c) != CONNECTION_OK){
		const char *m = PQerrorMessage(c);
		size_t n = strcspn(m, "\n");
		snprintf(err, errlen, "%.*s", (int)n, m);
		PQfinish(c);
		return NULL;
	}
	return c;
}

bool chat_pg_conn_lost(PGconn *c)
{
	return !c || PQstatus(c) != CONNECTION_OK;
}

static void reopen(struct chat_pgarr *a)
{
	if(!a->closed) return;
	a->closed = false;
	if(a->n == 0) chat_buf_reset(&a->b);
	else a->b.data[--a->b.len] = '\0';
}

int chat_pgarr_null(struct chat_pgarr *a)
{
	reopen(a);
	if(chat_buf_puts(&a->b, a->n ? ",NULL" : "{NULL")) return -1;
	a->n++;
	return 0;
}

int chat_pgarr_str(struct chat_pgarr *a, const char *s)
{
	if(!s) return chat_pgarr_null(a);
	reopen(a);
	if(chat_buf_puts(&a->b, a->n ? ",\"" : "{\"")) return -1;
	for(const char *p = s; *p; p++){
		if(*p == '"' || *p == '\\'){
			if(chat_buf_append(&a->b, "\\", 1)) return -1;
		}
		if(chat_buf_append(&a->b, p, 1)) return -1;
	}
	if(chat_buf_append(&a->b, "\"", 1)) return -1;
	a->n++;
	return 0;
}

int chat_pgarr_i64(struct chat_pgarr *a, int64_t v)
{
	reopen(a);
	if(chat_buf_printf(&a->b, "%s%lld", a->n ? "," : "{", (long long)v)) return -1;
	a->n++;
	return 0;
}

const char *chat_pgarr_end(struct chat_pgarr *a)
{
	if(a->closed) return a->b.data;
	if(chat_buf_puts(&a->b, a->n ? "}" : "{}")) return NULL;
	a->closed = true;
	return a->b.data;
}

void chat_pgarr_reset(struct chat_pgarr *a)
{
	chat_buf_reset(&a->b);
	a->n = 0;
	a->closed = false;
}

void chat_pgarr_free(struct chat_pgarr *a)
{
	chat_buf_free(&a->b);
	a->n = 0;
	a->closed = false;
}

void chat_pgarr_parsed_free(char **v, long n)
{
	if(!v) return;
	for(long i = 0; i < n; i++) free(v[i]);
	free(v);
}

long chat_pgarr_parse(const char *lit, char ***out)
{
	*out = NULL;
	if(!lit || lit[0] != '{') return -1;
	const char *p = lit + 1;
	long n = 0, cap = 0;
	char **v = NULL;
	struct chat_buf cur = {0};
	if(strcmp(p, "}") == 0) return 0;
	for(;;){
		bool isnull = false;
		chat_buf_reset(&cur);
		if(chat_buf_append(&cur, "", 0)) goto fail;
		if(*p == '"'){
			p++;
			while(*p && *p != '"'){
				if(*p == '\\' && p[1]) p++;
				if(chat_buf_append(&cur, p, 1)) goto fail;
				p++;
			}
			if(*p != '"') goto fail;
			p++;
		}else{
			/* unquoted: no quotes, braces or backslashes, never empty */
			while(*p && *p != ',' && *p != '}'){
				if(*p == '{' || *p == '"' || *p == '\\') goto fail;
				if(chat_buf_append(&cur, p, 1)) goto fail;
				p++;
			}
			if(cur.len == 0) goto fail;
			isnull = strcmp(cur.data, "NULL") == 0;
		}
		if(n == cap){
			cap = cap ? cap * 2 : 8;
			char **nv = realloc(v, (size_t)cap * sizeof *v);
			if(!nv) goto fail;
			v = nv;
		}
		v[n] = isnull ? NULL : strdup(cur.data);
		if(!isnull && !v[n]) goto fail;
		n++;
		if(*p == ','){
			p++;
			continue;
		}
		if(p[0] == '}' && p[1] == '\0') break;
		goto fail;
	}
	chat_buf_free(&cur);
	*out = v;
	return n;
fail:
	chat_buf_free(&cur);
	chat_pgarr_parsed_free(v, n);
	return -1;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int chat_pg_migrate(PGconn *c, const char *dir, int partitions, char *err, size_t errlen, int *applied)
{
	int rc = -1;
	DIR *d = NULL;
	char **names = NULL;
	size_t nn = 0, cap = 0;
	PGresult *r = NULL;
	*applied = 0;
	err[0] = '\0';

	/* One `chatctl init` at a time, also the very first (a session lock,
	 * released when this connection ends or below). */
	r = PQexec(c, "SELECT pg_advisory_lock(7413001)");
	if(PQresultStatus(r) != PGRES_TUPLES_OK){
		snprintf(err, errlen, "advisory lock: %s", PQresultErrorMessage(r));
		goto cleanup;
	}
	PQclear(r);
	r = PQexec(c, "CREATE TABLE IF NOT EXISTS schema_version ("
			"version integer PRIMARY KEY, name text NOT NULL, "
			"applied_at timestamptz NOT NULL DEFAULT now())");
	if(PQresultStatus(r) != PGRES_COMMAND_OK){
		snprintf(err, errlen, "schema_version: %s", PQresultErrorMessage(r));
		goto cleanup;
	}
	PQclear(r);
	r = NULL;

	d = opendir(dir);
	if(!d){
		snprintf(err, errlen, "cannot open schema directory %s: %s", dir, strerror(errno));
		goto cleanup;
	}
	struct dirent *de;
	while((de = readdir(d))){
		size_t l = strlen(de->d_name);
		if(l < 8 || strcmp(de->d_name + l - 4, ".sql") != 0) continue;
		if(de->d_name[0] < '0' || de->d_name[0] > '9') continue;
		if(nn == cap){
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(names, cap * sizeof *names);
			if(!nv) goto oom;
			names = nv;
		}
		names[nn] = strdup(de->d_name);
		if(!names[nn]) goto oom;
		nn++;
	}
	qsort(names, nn, sizeof *names, cmp_names);

	char partbuf[16];
	snprintf(partbuf, sizeof partbuf, "%d", partitions);
	for(size_t i = 0; i < nn; i++){
		int version = atoi(names[i]);
		char vbuf[16];
		snprintf(vbuf, sizeof vbuf, "%d", version);
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		char *sql = chat_read_file(path, 1 << 20, NULL);
		if(!sql){
			snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
			goto cleanup;
		}
		r = PQexec(c, "BEGIN");
		if(PQresultStatus(r) != PGRES_COMMAND_OK){
			free(sql);
			snprintf(err, errlen, "begin: %s", PQresultErrorMessage(r));
			goto cleanup;
		}
		PQclear(r);
		const char *pv[1] = {vbuf};
		r = PQexecParams(c, "SELECT 1 FROM schema_version WHERE version = $1::integer", 1, NULL, pv, NULL, NULL, 0);
		bool done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
		bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
		PQclear(r);
		r = NULL;
		if(!ok || done){
			free(sql);
			r = PQexec(c, ok ? "COMMIT" : "ROLLBACK");
			PQclear(r);
			r = NULL;
			if(!ok){
				snprintf(err, errlen, "schema_version lookup failed: %s", PQerrorMessage(c));
				goto cleanup;
			}
			continue;
		}
		const char *sv[1] = {partbuf};
		r = PQexecParams(c, "SELECT set_config('chat.partitions', $1, true)", 1, NULL, sv, NULL, NULL, 0);
		bool set_ok = PQresultStatus(r) == PGRES_TUPLES_OK;
		PQclear(r);
		r = set_ok ? PQexec(c, sql) : NULL; /* a trusted file of the project, not user text */
		free(sql);
		if(PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK){
			snprintf(err, errlen, "%s: %s", names[i], PQresultErrorMessage(r));
			PQclear(r);
			r = PQexec(c, "ROLLBACK");
			goto cleanup;
		}
		PQclear(r);
		const char *iv[2] = {vbuf, names[i]};
		r = PQexecParams(c, "INSERT INTO schema_version (version, name) VALUES ($1::integer, $2)", 2, NULL, iv, NULL, NULL, 0);
		if(PQresultStatus(r) != PGRES_COMMAND_OK){
			snprintf(err, errlen, "%s: schema_version: %s", names[i], PQresultErrorMessage(r));
			PQclear(r);
			r = PQexec(c, "ROLLBACK");
			goto cleanup;
		}
		PQclear(r);
		r = PQexec(c, "COMMIT");
		if(PQresultStatus(r) != PGRES_COMMAND_OK){
			snprintf(err, errlen, "%s: commit: %s", names[i], PQresultErrorMessage(r));
			goto cleanup;
		}
		PQclear(r);
		r = NULL;
		(*applied)++;
	}
	rc = 0;
	goto cleanup;
oom:
	snprintf(err, errlen, "out of memory");
cleanup:
	PQclear(r);
	r = PQexec(c, "SELECT pg_advisory_unlock_all()");
	PQclear(r);
	if(d) closedir(d);
	for(size_t i = 0; i < nn; i++) free(names[i]);
	free(names);
	if(err[0] == '\0' && rc) snprintf(err, errlen, "migration failed");
	return rc;
}
