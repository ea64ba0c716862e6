/* SPDX-License-Identifier: EPL-2.0
 * auth.h: credentials shared by the plugin, chat-rest and chatctl.
 *  - password hashes: PBKDF2-HMAC-SHA512, random 16-byte salt, iteration
 *    count stored in the hash string so it can be raised later;
 *  - MQTT verifiers: HMAC-SHA256(secret, user NUL password), checked by the
 *    broker thread in microseconds (the slow hash never runs there);
 *  - tokens: JWT HS256 {"sub","iat","exp"} signed with the same secret.
 * The secret is the content of the token secret file (>= 32 bytes).
 */
#ifndef CHAT_AUTH_H
#define CHAT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHAT_PBKDF2_ITER_DEFAULT 210000
#define CHAT_PWHASH_MAX 160
#define CHAT_VERIFIER_MAX 96
#define CHAT_TOKEN_MAX 512
#define CHAT_SECRET_MIN 32
#define CHAT_SECRET_MAX 4096

struct chat_secret {
	unsigned char key[CHAT_SECRET_MAX];
	size_t len;
	char kid[17]; /* key id: 16 hex chars derived from the key, not secret */
};

/* Load the secret file (trailing newline stripped). 0, or -1 with a
 * reason in err. */
int chat_secret_load(struct chat_secret *s, const char *path, char *err, size_t errlen);
/* Fill a secret from bytes (tests). */
int chat_secret_set(struct chat_secret *s, const void *key, size_t len);

/* Hash a password. out gets "pbkdf2-sha512$iter$salt$hash". 0 or -1. */
int chat_pwhash_make(const char *password, unsigned iterations, char out[CHAT_PWHASH_MAX]);
/* 0 match, 1 mismatch, -1 malformed stored hash. Constant-time compare. */
int chat_pwhash_verify(const char *password, const char *stored);

/* "kid$hex". 0 or -1. */
int chat_verifier_make(const struct chat_secret *s, const char *user, const char *password,
		char out[CHAT_VERIFIER_MAX]);
/* 0 match, 1 mismatch, 2 made with another key (kid differs) or missing. */
int chat_verifier_check(const struct chat_secret *s, const char *user, const char *password,
		const char *stored);

enum chat_token_rc {
	CHAT_TOKEN_OK = 0,
	CHAT_TOKEN_MALFORMED,
	CHAT_TOKEN_BAD_ALG,
	CHAT_TOKEN_BAD_SIGNATURE,
	CHAT_TOKEN_EXPIRED,
};
/* Issue a token for user valid for ttl_s seconds from now_s. */
int chat_token_issue(const struct chat_secret *s, const char *user, int64_t now_s, int64_t ttl_s,
		char out[CHAT_TOKEN_MAX], int64_t *expires_at);
/* Verify; on success copies the subject into user (65 bytes) and exp. */
enum chat_token_rc chat_token_verify(const struct chat_secret *s, const char *token, int64_t now_s,
		char user[65], int64_t *exp);
/* Quick shape test: three base64url parts separated by dots. */
bool chat_token_like(const char *s);

#endif
