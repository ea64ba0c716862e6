/* SPDX-License-Identifier: EPL-2.0
 * auth.c: password hashing, MQTT verifiers and JWT tokens (see auth.h).
 * OpenSSL does the cryptography; this file only frames it. Token checking
 * is deliberately strict: exactly HS256, canonical base64url, integer exp.
 */
#include "auth.h"
#include "ids.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void hmac256(const struct chat_secret *s, const void *msg, size_t len, unsigned char out[32])
{
	unsigned int olen = 32;
	HMAC(EVP_sha256(), s->key, (int)s->len, msg, len, out, &olen);
}

int chat_secret_set(struct chat_secret *s, const void *key, size_t len)
{
	if(len < CHAT_SECRET_MIN || len > CHAT_SECRET_MAX) return -1;
	memcpy(s->key, key, len);
	s->len = len;
	unsigned char mac[32];
	hmac256(s, "mosquitto-chat key id", 21, mac);
	chat_hex_encode(mac, 8, s->kid);
	return 0;
}

int chat_secret_load(struct chat_secret *s, const char *path, char *err, size_t errlen)
{
	size_t len = 0;
	char *buf = chat_read_file(path, CHAT_SECRET_MAX + 2, &len);
	if(!buf){
		snprintf(err, errlen, "cannot read token secret file %s: %s", path,
				errno == EFBIG ? "larger than 4096 bytes" : strerror(errno));
		return -1;
	}
	while(len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
	int rc = chat_secret_set(s, buf, len);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if(rc){
		snprintf(err, errlen, "token secret file %s must hold %d to %d bytes", path,
				CHAT_SECRET_MIN, CHAT_SECRET_MAX);
		return -1;
	}
	return 0;
}

int chat_pwhash_make(const char *password, unsigned iterations, char out[CHAT_PWHASH_MAX])
{
	unsigned char salt[16], dk[32];
	char salt64[32], dk64[48];
	if(iterations < 1000) return -1;
	if(RAND_bytes(salt, sizeof salt) != 1) return -1;
	if(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof salt, (int)iterations,
				EVP_sha512(), sizeof dk, dk) != 1) return -1;
	chat_b64_encode(salt, sizeof salt, salt64);
	chat_b64_encode(dk, sizeof dk, dk64);
	OPENSSL_cleanse(dk, sizeof dk);
	int n = snprintf(out, CHAT_PWHASH_MAX, "pbkdf2-sha512$%u$%s$%s", iterations, salt64, dk64);
	return (n > 0 && n < CHAT_PWHASH_MAX) ? 0 : -1;
}

int chat_pwhash_verify(const char *password, const char *stored)
{
	const char *pfx = "pbkdf2-sha512$";
	if(!stored || strncmp(stored, pfx, strlen(pfx)) != 0) return -1;
	const char *p = stored + strlen(pfx);
	char *end;
	if(*p < '0' || *p > '9') return -1;
	errno = 0;
	unsigned long iter = strtoul(p, &end, 10);
	if(errno || end == p || *end != '$' || iter < 1000 || iter > 100000000) return -1;
	const char *salt64 = end + 1;
	const char *d = strchr(salt64, '$');
	if(!d) return -1;
	const char *dk64 = d + 1;
	unsigned char salt[64], want[64], got[64];
	size_t slen = (size_t)(d - salt64), dlen = strlen(dk64);
	if(slen == 0 || slen > 80 || dlen == 0 || dlen > 80) return -1;
	long sn = chat_b64_decode(salt64, slen, salt);
	long dn = chat_b64_decode(dk64, dlen, want);
	if(sn <= 0 || dn <= 0) return -1;
	if(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)sn, (int)iter, EVP_sha512(),
				(int)dn, got) != 1) return -1;
	int rc = CRYPTO_memcmp(got, want, (size_t)dn) == 0 ? 0 : 1;
	OPENSSL_cleanse(got, sizeof got);
	return rc;
}

static int verifier_mac(const struct chat_secret *s, const char *user, const char *password,
		unsigned char mac[32])
{
	size_t ul = strlen(user), pl = strlen(password);
	/* user NUL password: the NUL keeps ("ab","c") and ("a","bc") apart */
	unsigned char stackbuf[512];
	unsigned char *msg = (ul + pl + 1 <= sizeof stackbuf) ? stackbuf : malloc(ul + pl + 1);
	if(!msg) return -1;
	memcpy(msg, user, ul);
	msg[ul] = 0;
	memcpy(msg + ul + 1, password, pl);
	hmac256(s, msg, ul + pl + 1, mac);
	OPENSSL_cleanse(msg, ul + pl + 1);
	if(msg != stackbuf) free(msg);
	return 0;
}

int chat_verifier_make(const struct chat_secret *s, const char *user, const char *password,
		char out[CHAT_VERIFIER_MAX])
{
	unsigned char mac[32];
	char hex[65];
	if(verifier_mac(s, user, password, mac)) return -1;
	chat_hex_encode(mac, 32, hex);
	int n = snprintf(out, CHAT_VERIFIER_MAX, "%s$%s", s->kid, hex);
	return (n > 0 && n < CHAT_VERIFIER_MAX) ? 0 : -1;
}

int chat_verifier_check(const struct chat_secret *s, const char *user, const char *password,
		const char *stored)
{
	if(!stored || strlen(stored) != 16 + 1 + 64 || stored[16] != '$') return 2;
	if(memcmp(stored, s->kid, 16) != 0) return 2;
	char want[CHAT_VERIFIER_MAX];
	if(chat_verifier_make(s, user, password, want)) return 1;
	return CRYPTO_memcmp(want, stored, 16 + 1 + 64) == 0 ? 0 : 1;
}

/* ---- JWT HS256 ---------------------------------------------------------- */

static const char JWT_HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

int chat_token_issue(const struct chat_secret *s, const char *user, int64_t now_s, int64_t ttl_s,
		char out[CHAT_TOKEN_MAX], int64_t *expires_at)
{
	if(!chat_id_valid(user) || ttl_s <= 0) return -1;
	char payload[160];
	int64_t exp = now_s + ttl_s;
	int pn = snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld}", user,
			(long long)now_s, (long long)exp);
	if(pn <= 0 || (size_t)pn >= sizeof payload) return -1;
	size_t o = chat_b64url_encode((const unsigned char *)JWT_HEADER, strlen(JWT_HEADER), out);
	out[o++] = '.';
	o += chat_b64url_encode((const unsigned char *)payload, (size_t)pn, out + o);
	unsigned char mac[32];
	hmac256(s, out, o, mac);
	out[o++] = '.';
	o += chat_b64url_encode(mac, 32, out + o);
	if(expires_at) *expires_at = exp;
	return 0;
}

bool chat_token_like(const char *t)
{
	int dots = 0;
	size_t n = 0;
	for(const char *p = t; *p; p++, n++){
		char c = *p;
		if(c == '.'){ dots++; continue; }
		if(!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return dots == 2 && n > 20 && n < CHAT_TOKEN_MAX;
}

enum chat_token_rc chat_token_verify(const struct chat_secret *s, const char *token, int64_t now_s,
		char user[65], int64_t *exp_out)
{
	if(!token || !chat_token_like(token)) return CHAT_TOKEN_MALFORMED;
	const char *d1 = strchr(token, '.');
	const char *d2 = strchr(d1 + 1, '.');
	size_t hlen = (size_t)(d1 - token), plen = (size_t)(d2 - d1 - 1), slen = strlen(d2 + 1);
	unsigned char hdr[CHAT_TOKEN_MAX], pay[CHAT_TOKEN_MAX], sig[CHAT_TOKEN_MAX];
	long hn = chat_b64url_decode(token, hlen, hdr);
	long pn = chat_b64url_decode(d1 + 1, plen, pay);
	long sn = chat_b64url_decode(d2 + 1, slen, sig);
	if(hn <= 0 || pn <= 0 || sn < 0) return CHAT_TOKEN_MALFORMED;

	/* header: must be a JSON object with alg exactly HS256 */
	json_error_t jerr;
	json_t *h = json_loadb((const char *)hdr, (size_t)hn, JSON_REJECT_DUPLICATES, &jerr);
	if(!h || !json_is_object(h)){
		json_decref(h);
		return CHAT_TOKEN_MALFORMED;
	}
	const char *alg = json_string_value(json_object_get(h, "alg"));
	bool alg_ok = alg && strcmp(alg, "HS256") == 0;
	json_decref(h);
	if(!alg_ok) return CHAT_TOKEN_BAD_ALG;

	unsigned char mac[32];
	hmac256(s, token, (size_t)(d2 - token), mac);
	if(sn != 32 || CRYPTO_memcmp(mac, sig, 32) != 0) return CHAT_TOKEN_BAD_SIGNATURE;

	json_t *p = json_loadb((const char *)pay, (size_t)pn, JSON_REJECT_DUPLICATES, &jerr);
	if(!p || !json_is_object(p)){
		json_decref(p);
		return CHAT_TOKEN_MALFORMED;
	}
	const char *sub = json_string_value(json_object_get(p, "sub"));
	json_t *jexp = json_object_get(p, "exp");
	enum chat_token_rc rc = CHAT_TOKEN_OK;
	if(!sub || !chat_id_valid(sub) || !json_is_integer(jexp)){
		rc = CHAT_TOKEN_MALFORMED;
	}else if(json_integer_value(jexp) <= now_s){
		rc = CHAT_TOKEN_EXPIRED;
	}else{
		snprintf(user, 65, "%s", sub);
		if(exp_out) *exp_out = json_integer_value(jexp);
	}
	json_decref(p);
	return rc;
}
