/* SPDX-License-Identifier: EPL-2.0
 * auth.c: POST /v1/login and Bearer tokens for chat-rest.
 * Login checks the PBKDF2 hash on the worker thread (slow by design),
 * spends the same time for unknown users so timing does not reveal who
 * exists, and refreshes users.verifier so the broker can check the same
 * password in microseconds. Attempts are rate-limited per user id and per
 * client address with token buckets, checked before any hashing.
 * Bearer tokens are JWT HS256 checked by HMAC; the user must exist and be
 * enabled, which is cached for CHAT_REST_USER_CACHE_NS (so a deleted or
 * disabled user's tokens stop working within that time).
 */
#include "rest.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define RL_SLOTS 16384 /* buckets per limiter */
#define RL_PROBE 8

/* ---- keyed hash -------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* FNV-1a under a random per-process seed, finalised with splitmix64:
 * clients cannot aim many keys at one slot without knowing the seed. */
static uint64_t keyed_hash(const struct chat_rest *r, uint64_t domain, const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0xcbf29ce484222325ULL ^ r->hash_seed[0] ^ domain;
	for(size_t i = 0; i < n; i++){
		h ^= s[i];
		h *= 0x100000001b3ULL;
	}
	h = mix64(h ^ r->hash_seed[1]);
	return h ? h : 1; /* 0 marks a free slot */
}

/* ---- token buckets ----------------------------------------------------- */

static int rl_init(struct chat_ratelimit *rl, int per_min)
{
	memset(rl, 0, sizeof *rl);
	rl->per_min = per_min;
	if(per_min <= 0) return 0;
	rl->nslots = RL_SLOTS;
	rl->slots = calloc(rl->nslots, sizeof *rl->slots);
	if(!rl->slots) return -1;
	rl->burst = per_min;
	rl->per_ns = (double)per_min / 60e9;
	pthread_mutex_init(&rl->mu, NULL);
	return 0;
}

static void rl_free(struct chat_ratelimit *rl)
{
	if(rl->slots){
		pthread_mutex_destroy(&rl->mu);
		free(rl->slots);
	}
	rl->slots = NULL;
}

static double rl_level(const struct chat_ratelimit *rl, const struct chat_bucket *b, int64_t now)
{
	double t = b->tokens + (double)(now - b->last_ns) * rl->per_ns;
	return t > rl->burst ? rl->burst : t;
}

/* Take one token for key. False when empty; *retry_s is when the next
 * token arrives. A full bucket is the same as no bucket, so full ones
 * are recycled; with no such slot near, the fullest one is. */
static bool rl_take(struct chat_ratelimit *rl, uint64_t key, int *retry_s)
{
	if(rl->per_min <= 0) return true;
	int64_t now = chat_mono_ns();
	pthread_mutex_lock(&rl->mu);
	size_t mask = rl->nslots - 1;
	struct chat_bucket *b = NULL, *reuse = NULL, *fullest = NULL;
	double fullest_level = -1;
	for(size_t k = 0; k < RL_PROBE; k++){
		struct chat_bucket *s = &rl->slots[(key + k) & mask];
		if(s->key == key){
			b = s;
			break;
		}
		if(reuse) continue;
		double lv = s->key ? rl_level(rl, s, now) : rl->burst;
		if(!s->key || lv >= rl->burst){
			reuse = s;
		}else if(lv > fullest_level){
			fullest_level = lv;
			fullest = s;
		}
	}
	if(!b){
		b = reuse ? reuse : fullest;
		b->key = key;
		b->tokens = rl->burst;
		b->last_ns = now;
	}
	b->tokens = rl_level(rl, b, now);
	b->last_ns = now;
	bool ok = b->tokens >= 1.0;
	if(ok){
		b->tokens -= 1.0;
	}else{
		*retry_s = (int)ceil((1.0 - b->tokens) / rl->per_ns / 1e9);
		if(*retry_s < 1) *retry_s = 1;
	}
	pthread_mutex_unlock(&rl->mu);
	return ok;
}

/* ---- "user exists and is enabled" cache --------------------------------- */

static bool cache_hit(struct chat_rest *r, const char *user)
{
	uint64_t h = keyed_hash(r, 3, user, strlen(user));
	struct chat_user_cache_entry *e = &r->user_cache[h & (CHAT_REST_USER_CACHE_SLOTS - 1)];
	int64_t now = chat_mono_ns();
	pthread_mutex_lock(&r->cache_mu);
	bool hit = e->until_ns > now && strcmp(e->user, user) == 0;
	pthread_mutex_unlock(&r->cache_mu);
	return hit;
}

static void cache_put(struct chat_rest *r, const char *user)
{
	uint64_t h = keyed_hash(r, 3, user, strlen(user));
	struct chat_user_cache_entry *e = &r->user_cache[h & (CHAT_REST_USER_CACHE_SLOTS - 1)];
	pthread_mutex_lock(&r->cache_mu);
	snprintf(e->user, sizeof e->user, "%s", user);
	e->until_ns = chat_mono_ns() + CHAT_REST_USER_CACHE_NS;
	pthread_mutex_unlock(&r->cache_mu);
}

/* ---- setup -------------------------------------------------------------- */

int chat_auth__init(struct chat_rest *r, char *err, size_t errlen)
{
	unsigned char rnd[32];
	if(getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd){
		snprintf(err, errlen, "no randomness available");
		return -1;
	}
	memcpy(r->hash_seed, rnd, sizeof r->hash_seed);
	/* A hash of a random password: unknown users are checked against it,
	 * so a miss costs the same time whether or not the user exists. */
	char pw[33];
	chat_hex_encode(rnd + 16, 16, pw);
	if(chat_pwhash_make(pw, CHAT_PBKDF2_ITER_DEFAULT, r->dummy_hash)){
		snprintf(err, errlen, "cannot hash a password (OpenSSL)");
		return -1;
	}
	if(rl_init(&r->rl_user, r->cfg.login_rate_user) || rl_init(&r->rl_addr, r->cfg.login_rate_addr)){
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	r->user_cache = calloc(CHAT_REST_USER_CACHE_SLOTS, sizeof *r->user_cache);
	if(!r->user_cache){
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&r->cache_mu, NULL);
	return 0;
}

void chat_auth__cleanup(struct chat_rest *r)
{
	rl_free(&r->rl_user);
	rl_free(&r->rl_addr);
	if(r->user_cache){
		pthread_mutex_destroy(&r->cache_mu);
		free(r->user_cache);
		r->user_cache = NULL;
	}
}

/* ---- POST /v1/login ------------------------------------------------------ */

static void rate_limited(struct chat_req *q, int retry_s, const char *what)
{
	q->retry_after_s = retry_s;
	char reason[96];
	snprintf(reason, sizeof reason, "too many login attempts %s, retry in %d s", what, retry_s);
	chat_http__error(q, 429, "rate_limited", reason);
}

void chat_auth__login(struct chat_req *q)
{
	struct chat_rest *r = q->rest;
	json_error_t jerr;
	json_t *root = NULL;
	PGresult *res = NULL;
	q->no_store = true;

	if(!q->body.data || !q->body.len){
		chat_http__error(q, 400, "bad_request", "body must be JSON {\"user\":…,\"password\":…}");
		goto cleanup;
	}
	root = json_loadb(q->body.data, q->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if(!root || !json_is_object(root)){
		chat_http__error(q, 400, "bad_request", "body must be a JSON object {\"user\":…,\"password\":…}");
		goto cleanup;
	}
	const char *user = json_string_value(json_object_get(root, "user"));
	const char *password = json_string_value(json_object_get(root, "password"));
	if(!user || !password){
		chat_http__error(q, 400, "bad_request", "\"user\" and \"password\" must be strings");
		goto cleanup;
	}
	if(!chat_id_valid(user)){
		chat_http__error(q, 400, "bad_request", "user must be 1 to 64 characters [A-Za-z0-9._-]");
		goto cleanup;
	}
	if(strlen(password) != json_string_length(json_object_get(root, "password"))){
		chat_http__error(q, 400, "bad_request", "password must not contain NUL");
		goto cleanup;
	}

	/* Rate limits before any database or hashing work. */
	int retry = 0;
	unsigned char addr[16];
	size_t alen = chat_http__client_addr(q, addr);
	if(alen && !rl_take(&r->rl_addr, keyed_hash(r, 1, addr, alen), &retry)){
		rate_limited(q, retry, "from this address");
		goto cleanup;
	}
	if(!rl_take(&r->rl_user, keyed_hash(r, 2, user, strlen(user)), &retry)){
		rate_limited(q, retry, "for this user");
		goto cleanup;
	}

	const char *p[] = {user};
	enum chat_db_rc rc = chat_db__exec(r, CHAT_Q_LOGIN_USER, 1, p, &res);
	if(rc){
		chat_http__db_error(q, rc);
		goto cleanup;
	}
	if(PQntuples(res) != 1){
		(void)chat_pwhash_verify(password, r->dummy_hash); /* same time as a wrong password */
		chat_http__error(q, 401, "unauthorized", "wrong user or password");
		goto cleanup;
	}
	const char *pwhash = PQgetvalue(res, 0, 0);
	const char *verifier = PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1);
	bool disabled = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	int vr = chat_pwhash_verify(password, pwhash);
	if(vr < 0) chat_rest__log("login: stored password hash of user %s is malformed", user);
	if(vr != 0){
		chat_http__error(q, 401, "unauthorized", "wrong user or password");
		goto cleanup;
	}
	if(disabled){
		chat_http__error(q, 403, "forbidden", "this account is disabled");
		goto cleanup;
	}

	/* Let the broker check this password quickly from now on. */
	if(chat_verifier_check(&r->secret, user, password, verifier) != 0){
		char v[CHAT_VERIFIER_MAX];
		if(chat_verifier_make(&r->secret, user, password, v) == 0){
			const char *up[] = {user, v, pwhash};
			PGresult *ures;
			if(chat_db__exec(r, CHAT_Q_SET_VERIFIER, 3, up, &ures) == CHAT_DB_OK) PQclear(ures);
			else chat_rest__log("login: could not store the verifier of user %s", user);
		}
	}

	char token[CHAT_TOKEN_MAX];
	int64_t exp = 0;
	if(chat_token_issue(&r->secret, user, (int64_t)time(NULL), r->cfg.token_ttl_s, token, &exp)){
		chat_http__error(q, 500, "internal", "cannot issue a token");
		goto cleanup;
	}
	struct chat_buf b = {0};
	int e = chat_buf_puts(&b, "{\"token\":");
	e |= chat_http__append_jstr(&b, token);
	e |= chat_buf_printf(&b, ",\"expires_at\":%lld}", (long long)exp);
	if(e){
		chat_buf_free(&b);
		chat_http__error(q, 500, "internal", "out of memory");
		goto cleanup;
	}
	chat_http__jsonbuf(q, 200, &b);
	cache_put(r, user);
cleanup:
	PQclear(res);
	json_decref(root);
}

/* ---- Authorization: Bearer ------------------------------------------------ */

bool chat_auth__bearer(struct chat_req *q)
{
	struct chat_rest *r = q->rest;
	const char *h = chat_http__header(q, "Authorization");
	while(h && isspace((unsigned char)*h)) h++;
	if(!h || strncasecmp(h, "Bearer", 6) != 0 || !isspace((unsigned char)h[6])){
		chat_http__error(q, 401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)");
		return false;
	}
	h += 6;
	while(isspace((unsigned char)*h)) h++;
	size_t n = strlen(h);
	while(n && isspace((unsigned char)h[n - 1])) n--;
	if(n == 0 || n >= CHAT_TOKEN_MAX){
		chat_http__error(q, 401, "unauthorized", "malformed token");
		return false;
	}
	char token[CHAT_TOKEN_MAX];
	memcpy(token, h, n);
	token[n] = '\0';

	int64_t exp = 0;
	switch(chat_token_verify(&r->secret, token, (int64_t)time(NULL), q->user, &exp)){
	case CHAT_TOKEN_OK:
		break;
	case CHAT_TOKEN_BAD_ALG:
		chat_http__error(q, 401, "unauthorized", "token algorithm must be HS256");
		return false;
	case CHAT_TOKEN_BAD_SIGNATURE:
		chat_http__error(q, 401, "unauthorized", "invalid token signature");
		return false;
	case CHAT_TOKEN_EXPIRED:
		chat_http__error(q, 401, "unauthorized", "token expired");
		return false;
	case CHAT_TOKEN_MALFORMED:
	default:
		chat_http__error(q, 401, "unauthorized", "malformed token");
		return false;
	}
	if(cache_hit(r, q->user)) return true;
	const char *p[] = {q->user};
	PGresult *res;
	enum chat_db_rc rc = chat_db__exec(r, CHAT_Q_USER_ENABLED, 1, p, &res);
	if(rc){
		chat_http__db_error(q, rc);
		return false;
	}
	bool ok = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	bool exists = PQntuples(res) == 1;
	PQclear(res);
	if(!ok){
		chat_http__error(q, 401, "unauthorized", exists ? "this account is disabled" : "unknown user");
		return false;
	}
	cache_put(r, q->user);
	return true;
}
