/* SPDX-License-Identifier: EPL-2.0
 * test_auth.c: password hashes, MQTT verifiers and JWT tokens
 * (common/auth.c). Tokens are also crafted by hand here (own HMAC) so that
 * header and payload shapes the issuer never produces are covered: alg
 * none, HS512, missing exp, bad sub, tampering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "util.h"

#define NOW 1700000000LL

static const char KEY1[] = "0123456789abcdef0123456789abcdef-key-one";
static const char KEY2[] = "0123456789abcdef0123456789abcdef-key-two";

static struct chat_secret s1, s2;

static int setup_secrets(void **state)
{
	(void)state;
	if(chat_secret_set(&s1, KEY1, strlen(KEY1))) return -1;
	if(chat_secret_set(&s2, KEY2, strlen(KEY2))) return -1;
	return 0;
}

/* ---- secrets ------------------------------------------------------------ */

static void test_secret_set(void **state)
{
	(void)state;
	struct chat_secret s;
	unsigned char k[CHAT_SECRET_MAX + 1];
	memset(k, 'k', sizeof k);
	assert_int_equal(chat_secret_set(&s, k, CHAT_SECRET_MIN - 1), -1);
	assert_int_equal(chat_secret_set(&s, k, CHAT_SECRET_MAX + 1), -1);
	assert_int_equal(chat_secret_set(&s, k, CHAT_SECRET_MIN), 0);
	assert_int_equal(s.len, CHAT_SECRET_MIN);
	assert_int_equal(strlen(s.kid), 16);
	assert_int_equal(strspn(s.kid, "0123456789abcdef"), 16);
	char kid[17];
	memcpy(kid, s.kid, sizeof kid);
	assert_int_equal(chat_secret_set(&s, k, CHAT_SECRET_MAX), 0);
	assert_string_not_equal(kid, s.kid);
	assert_string_not_equal(s1.kid, s2.kid);
}

static void test_secret_load(void **state)
{
	(void)state;
	char dir[512], path[600], err[256];
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/chat-auth-XXXXXX", t && *t ? t : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/secret", dir);
	struct chat_secret s;

	err[0] = '\0';
	assert_int_equal(chat_secret_load(&s, path, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot read"));

	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%s\r\n\n", KEY1);
	fclose(f);
	assert_int_equal(chat_secret_load(&s, path, err, sizeof err), 0);
	assert_int_equal(s.len, strlen(KEY1)); /* trailing newlines stripped */
	assert_string_equal(s.kid, s1.kid);

	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "short\n");
	fclose(f);
	err[0] = '\0';
	assert_int_equal(chat_secret_load(&s, path, err, sizeof err), -1);
	assert_true(strlen(err) > 0);
	unlink(path);
	rmdir(dir);
}

/* ---- password hashes ----------------------------------------------------- */

static void test_pwhash_roundtrip(void **state)
{
	(void)state;
	char h[CHAT_PWHASH_MAX], h2[CHAT_PWHASH_MAX];
	assert_int_equal(chat_pwhash_make("correct horse", 1000, h), 0);
	assert_true(strncmp(h, "pbkdf2-sha512$1000$", 19) == 0);
	assert_int_equal(chat_pwhash_verify("correct horse", h), 0);
	assert_int_equal(chat_pwhash_verify("correct horsE", h), 1);
	assert_int_equal(chat_pwhash_verify("", h), 1);
	assert_int_equal(chat_pwhash_verify("correct horse ", h), 1);
	/* salted: the same password hashes differently */
	assert_int_equal(chat_pwhash_make("correct horse", 1000, h2), 0);
	assert_string_not_equal(h, h2);
	assert_int_equal(chat_pwhash_verify("correct horse", h2), 0);
	/* the iteration count is stored and used */
	assert_int_equal(chat_pwhash_make("pw", 1234, h), 0);
	assert_true(strncmp(h, "pbkdf2-sha512$1234$", 19) == 0);
	assert_int_equal(chat_pwhash_verify("pw", h), 0);
	char *p = strstr(h, "$1234$");
	assert_non_null(p);
	memcpy(p, "$1235$", 6); /* same salt and hash, other count: mismatch */
	assert_int_equal(chat_pwhash_verify("pw", h), 1);
	/* empty and non-ASCII passwords */
	assert_int_equal(chat_pwhash_make("", 1000, h), 0);
	assert_int_equal(chat_pwhash_verify("", h), 0);
	assert_int_equal(chat_pwhash_verify("x", h), 1);
	assert_int_equal(chat_pwhash_make("p\xc3\xa4ss", 1000, h), 0);
	assert_int_equal(chat_pwhash_verify("p\xc3\xa4ss", h), 0);
	/* too few iterations refused */
	assert_int_equal(chat_pwhash_make("pw", 999, h), -1);
	assert_int_equal(chat_pwhash_make("pw", 0, h), -1);
}

static void test_pwhash_malformed(void **state)
{
	(void)state;
	char good[CHAT_PWHASH_MAX];
	assert_int_equal(chat_pwhash_make("pw", 1000, good), 0);
	/* good = pbkdf2-sha512$1000$<salt64>$<dk64> */
	const char *salt = good + strlen("pbkdf2-sha512$1000$");
	const char *d = strchr(salt, '$');
	assert_non_null(d);
	char s64[64], dk64[80];
	snprintf(s64, sizeof s64, "%.*s", (int)(d - salt), salt);
	snprintf(dk64, sizeof dk64, "%s", d + 1);

	char longb64[200];
	memset(longb64, 'A', 84);
	strcpy(longb64 + 84, "");

	char buf[64][400];
	int n = 0;
#define ADD(...) snprintf(buf[n++], sizeof buf[0], __VA_ARGS__)
	ADD("%s", "");
	ADD("%s", "pbkdf2-sha512");
	ADD("%s", "pbkdf2-sha512$");
	ADD("%s", "pbkdf2-sha512$1000");
	ADD("%s", "pbkdf2-sha512$1000$");
	ADD("%s", "pbkdf2-sha512$1000$$");
	ADD("pbkdf2-sha512$1000$%s", s64);
	ADD("pbkdf2-sha512$1000$%s$", s64);
	ADD("pbkdf2-sha512$1000$$%s", dk64);
	ADD("pbkdf2-sha256$1000$%s$%s", s64, dk64);
	ADD("PBKDF2-SHA512$1000$%s$%s", s64, dk64);
	ADD("bcrypt$1000$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$abc$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$1000x$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$999$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$0$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$-1000$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$100000001$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$18446744073709551616$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$99999999999999999999999$%s$%s", s64, dk64);
	ADD("pbkdf2-sha512$1000$%s$%s$extra", s64, dk64);
	ADD("pbkdf2-sha512$1000$!!!!$%s", dk64);
	ADD("pbkdf2-sha512$1000$%s$!!!!", s64);
	ADD("pbkdf2-sha512$1000$%s$%s", "abc", dk64);      /* unpadded */
	ADD("pbkdf2-sha512$1000$%s$%s", s64, "abc");
	ADD("pbkdf2-sha512$1000$%s$%s", "Zh==", dk64);     /* non-canonical */
	ADD("pbkdf2-sha512$1000$%s$%s", "====", dk64);
	ADD("pbkdf2-sha512$1000$%s$%s", longb64, dk64);    /* 84 chars: too long */
	ADD("pbkdf2-sha512$1000$%s$%s", s64, longb64);
	ADD("pbkdf2-sha512$1000$%s$%s", s64, "$$$$");
	ADD("pbkdf2-sha512$1000$%s$%s ", s64, dk64);
	ADD("pbkdf2-sha512$1000$ %s$%s", s64, dk64);
	ADD("pbkdf2-sha512$1000$%s$%s\n", s64, dk64);
	ADD("$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$");
	ADD("pbkdf2-sha512$1000$\xff\xfe$\xff");
	ADD(" pbkdf2-sha512$1000$%s$%s", s64, dk64);
#undef ADD
	assert_int_equal(chat_pwhash_verify("pw", NULL), -1);
	for(int i = 0; i < n; i++){
		int rc = chat_pwhash_verify("pw", buf[i]);
		if(rc != -1) fail_msg("stored \"%s\": got %d, want -1", buf[i], rc);
	}
	/* the intact string still verifies */
	char ok[400];
	snprintf(ok, sizeof ok, "pbkdf2-sha512$1000$%s$%s", s64, dk64);
	assert_int_equal(chat_pwhash_verify("pw", ok), 0);
	/* a long garbage string must not overflow anything */
	char huge[5000];
	memset(huge, 'A', sizeof huge - 1);
	huge[sizeof huge - 1] = '\0';
	memcpy(huge, "pbkdf2-sha512$1000$", 19);
	assert_int_equal(chat_pwhash_verify("pw", huge), -1);
	huge[100] = '$';
	assert_int_equal(chat_pwhash_verify("pw", huge), -1);
}

/* BUG (minor): the iteration field is read with strtoul(), which accepts
 * leading white space and a sign, so "$ 1000$" and "$+1000$" are taken as a
 * well-formed hash and answered 0/1 instead of -1 (malformed). */
static void test_pwhash_iter_field_strict(void **state)
{
	(void)state;
	char good[CHAT_PWHASH_MAX], bad[CHAT_PWHASH_MAX + 8];
	assert_int_equal(chat_pwhash_make("pw", 1000, good), 0);
	const char *rest = good + strlen("pbkdf2-sha512$1000");
	const char *iters[] = {"+1000", " 1000", "\t1000"};
	int wrong = 0;
	for(size_t i = 0; i < sizeof iters / sizeof iters[0]; i++){
		snprintf(bad, sizeof bad, "pbkdf2-sha512$%s%s", iters[i], rest);
		int rc = chat_pwhash_verify("pw", bad);
		if(rc != -1){
			print_error("iteration field \"%s\": got %d, want -1\n", iters[i], rc);
			wrong++;
		}
	}
	if(wrong) fail_msg("%d malformed iteration field(s) accepted", wrong);
}

/* ---- verifiers ------------------------------------------------------------ */

static void test_verifier(void **state)
{
	(void)state;
	char v[CHAT_VERIFIER_MAX];
	assert_int_equal(chat_verifier_make(&s1, "alice", "secret", v), 0);
	assert_int_equal(strlen(v), 16 + 1 + 64);
	assert_true(strncmp(v, s1.kid, 16) == 0);
	assert_int_equal(v[16], '$');
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", v), 0);
	assert_int_equal(chat_verifier_check(&s1, "alice", "Secret", v), 1);
	assert_int_equal(chat_verifier_check(&s1, "alice", "", v), 1);
	assert_int_equal(chat_verifier_check(&s1, "bob", "secret", v), 1);
	/* deterministic */
	char v2[CHAT_VERIFIER_MAX];
	assert_int_equal(chat_verifier_make(&s1, "alice", "secret", v2), 0);
	assert_string_equal(v, v2);
	/* made under another key */
	assert_int_equal(chat_verifier_check(&s2, "alice", "secret", v), 2);
	assert_int_equal(chat_verifier_make(&s2, "alice", "secret", v2), 0);
	assert_string_not_equal(v, v2);
	assert_int_equal(chat_verifier_check(&s2, "alice", "secret", v2), 0);
	/* missing or malformed stored value */
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", NULL), 2);
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", ""), 2);
	char t[CHAT_VERIFIER_MAX + 8];
	snprintf(t, sizeof t, "%.80s", v); /* one hex char short */
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", t), 2);
	snprintf(t, sizeof t, "%s0", v);   /* one too many */
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", t), 2);
	snprintf(t, sizeof t, "%s", v);
	t[16] = ':';
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", t), 2);
	/* right kid, wrong mac */
	snprintf(t, sizeof t, "%s", v);
	t[40] = t[40] == '0' ? '1' : '0';
	assert_int_equal(chat_verifier_check(&s1, "alice", "secret", t), 1);
	/* user/password boundary: ("ab","c") is not ("a","bc") */
	char va[CHAT_VERIFIER_MAX], vb[CHAT_VERIFIER_MAX];
	assert_int_equal(chat_verifier_make(&s1, "ab", "c", va), 0);
	assert_int_equal(chat_verifier_make(&s1, "a", "bc", vb), 0);
	assert_string_not_equal(va, vb);
	assert_int_equal(chat_verifier_check(&s1, "a", "bc", va), 1);
	assert_int_equal(chat_verifier_check(&s1, "ab", "c", vb), 1);
	/* a password longer than the internal stack buffer */
	char longpw[2000];
	memset(longpw, 'p', sizeof longpw - 1);
	longpw[sizeof longpw - 1] = '\0';
	assert_int_equal(chat_verifier_make(&s1, "alice", longpw, v), 0);
	assert_int_equal(chat_verifier_check(&s1, "alice", longpw, v), 0);
	longpw[1000] = 'q';
	assert_int_equal(chat_verifier_check(&s1, "alice", longpw, v), 1);
}

/* ---- tokens --------------------------------------------------------------- */

static void b64url(const char *in, size_t n, char *out)
{
	chat_b64url_encode((const unsigned char *)in, n, out);
}

/* header.payload.signature with our own HMAC-SHA256 under key (NULL key:
 * empty signature). */
static void craft(char *out, size_t outlen, const char *header, const char *payload,
		const struct chat_secret *key)
{
	char h[600], p[600], sig[64];
	b64url(header, strlen(header), h);
	b64url(payload, strlen(payload), p);
	if(snprintf(out, outlen, "%s.%s", h, p) >= (int)outlen) fail_msg("crafted token too long");
	sig[0] = '\0';
	if(key){
		unsigned char mac[32];
		unsigned int mlen = 32;
		HMAC(EVP_sha256(), key->key, (int)key->len, (const unsigned char *)out, strlen(out), mac, &mlen);
		chat_b64url_encode(mac, 32, sig);
	}
	size_t l = strlen(out);
	if(snprintf(out + l, outlen - l, ".%s", sig) >= (int)(outlen - l)) fail_msg("crafted token too long");
}

static const char HS256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void test_token_roundtrip(void **state)
{
	(void)state;
	char tok[CHAT_TOKEN_MAX], user[65];
	int64_t exp = 0, vexp = 0;
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, 3600, tok, &exp), 0);
	assert_int_equal(exp, NOW + 3600);
	assert_true(chat_token_like(tok));
	assert_int_equal(chat_token_verify(&s1, tok, NOW, user, &vexp), CHAT_TOKEN_OK);
	assert_string_equal(user, "alice");
	assert_int_equal(vexp, NOW + 3600);
	assert_int_equal(chat_token_verify(&s1, tok, NOW + 3599, user, NULL), CHAT_TOKEN_OK);
	/* a 64-character user id fits */
	char u64[65];
	memset(u64, 'u', 64);
	u64[64] = '\0';
	assert_int_equal(chat_token_issue(&s1, u64, NOW, 60, tok, NULL), 0);
	assert_int_equal(chat_token_verify(&s1, tok, NOW, user, NULL), CHAT_TOKEN_OK);
	assert_string_equal(user, u64);
	/* issuing refuses bad ids and non-positive lifetimes */
	assert_int_equal(chat_token_issue(&s1, "a/b", NOW, 60, tok, NULL), -1);
	assert_int_equal(chat_token_issue(&s1, "", NOW, 60, tok, NULL), -1);
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, 0, tok, NULL), -1);
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, -5, tok, NULL), -1);
	/* the hand-crafted form of the same token verifies too */
	char c[CHAT_TOKEN_MAX];
	craft(c, sizeof c, HS256, "{\"sub\":\"bob\",\"iat\":1,\"exp\":1700000100}", &s1);
	assert_int_equal(chat_token_verify(&s1, c, NOW, user, &vexp), CHAT_TOKEN_OK);
	assert_string_equal(user, "bob");
	assert_int_equal(vexp, 1700000100);
}

static void test_token_expired(void **state)
{
	(void)state;
	char tok[CHAT_TOKEN_MAX], user[65];
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, 60, tok, NULL), 0);
	assert_int_equal(chat_token_verify(&s1, tok, NOW + 59, user, NULL), CHAT_TOKEN_OK);
	assert_int_equal(chat_token_verify(&s1, tok, NOW + 60, user, NULL), CHAT_TOKEN_EXPIRED);
	assert_int_equal(chat_token_verify(&s1, tok, NOW + 100000, user, NULL), CHAT_TOKEN_EXPIRED);
}

static void test_token_other_key(void **state)
{
	(void)state;
	char tok[CHAT_TOKEN_MAX], user[65];
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, 60, tok, NULL), 0);
	assert_int_equal(chat_token_verify(&s2, tok, NOW, user, NULL), CHAT_TOKEN_BAD_SIGNATURE);
}

static void test_token_tampered(void **state)
{
	(void)state;
	char tok[CHAT_TOKEN_MAX], user[65], t[CHAT_TOKEN_MAX + 64];
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, 3600, tok, NULL), 0);
	char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');

	/* payload swapped for another user's, signature kept */
	char p[300];
	const char *pl = "{\"sub\":\"mallory\",\"iat\":1700000000,\"exp\":1700003600}";
	b64url(pl, strlen(pl), p);
	snprintf(t, sizeof t, "%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_SIGNATURE);

	/* exp extended, signature kept */
	pl = "{\"sub\":\"alice\",\"iat\":1700000000,\"exp\":1900003600}";
	b64url(pl, strlen(pl), p);
	snprintf(t, sizeof t, "%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_SIGNATURE);

	/* one character of the payload part changed */
	snprintf(t, sizeof t, "%s", tok);
	size_t i = (size_t)(d1 - tok) + 5;
	t[i] = t[i] == 'A' ? 'B' : 'A';
	enum chat_token_rc rc = chat_token_verify(&s1, t, NOW, user, NULL);
	assert_true(rc == CHAT_TOKEN_BAD_SIGNATURE || rc == CHAT_TOKEN_MALFORMED);

	/* signature changed in the middle (canonical base64url still) */
	snprintf(t, sizeof t, "%s", tok);
	i = (size_t)(d2 - tok) + 10;
	t[i] = t[i] == 'A' ? 'B' : 'A';
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_SIGNATURE);

	/* signature truncated, extended, emptied */
	snprintf(t, sizeof t, "%.*s", (int)strlen(tok) - 4, tok);
	assert_int_not_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_OK);
	snprintf(t, sizeof t, "%sAAAA", tok);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_SIGNATURE);
	snprintf(t, sizeof t, "%.*s.", (int)(d2 - tok), tok);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_SIGNATURE);

	/* non-canonical last signature character (same bits when decoded leniently) */
	snprintf(t, sizeof t, "%s", tok);
	char *last = t + strlen(t) - 1;
	const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	int v = (int)(strchr(alpha, *last) - alpha);
	*last = alpha[v | 1]; /* 43 chars: the last one carries 2 unused bits */
	if(v != (v | 1)) assert_int_not_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_OK);
}

static void test_token_alg(void **state)
{
	(void)state;
	char t[CHAT_TOKEN_MAX], user[65];
	const char *pl = "{\"sub\":\"alice\",\"iat\":1700000000,\"exp\":1700003600}";

	/* alg none, empty signature */
	craft(t, sizeof t, "{\"alg\":\"none\",\"typ\":\"JWT\"}", pl, NULL);
	assert_int_equal(t[strlen(t) - 1], '.');
	enum chat_token_rc rc = chat_token_verify(&s1, t, NOW, user, NULL);
	assert_int_not_equal(rc, CHAT_TOKEN_OK);
	assert_true(rc == CHAT_TOKEN_BAD_ALG || rc == CHAT_TOKEN_MALFORMED);
	/* alg none, even with a valid HMAC */
	craft(t, sizeof t, "{\"alg\":\"none\"}", pl, &s1);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_ALG);
	craft(t, sizeof t, "{\"alg\":\"None\"}", pl, &s1);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_BAD_ALG);
	/* HS512 and friends, signed with the right key over these bytes */
	const char *algs[] = {"{\"alg\":\"HS512\",\"typ\":\"JWT\"}", "{\"alg\":\"HS384\"}", "{\"alg\":\"RS256\"}",
		"{\"alg\":\"hs256\"}", "{\"alg\":\"HS256 \"}", "{\"alg\":256}", "{\"alg\":null}", "{\"typ\":\"JWT\"}",
		"{}", "{\"alg\":[\"HS256\"]}"};
	for(size_t i = 0; i < sizeof algs / sizeof algs[0]; i++){
		craft(t, sizeof t, algs[i], pl, &s1);
		rc = chat_token_verify(&s1, t, NOW, user, NULL);
		if(rc != CHAT_TOKEN_BAD_ALG) fail_msg("header %s: got %d", algs[i], rc);
	}
	/* header that is not a JSON object, or has duplicate keys */
	const char *hdrs[] = {"[\"HS256\"]", "\"HS256\"", "HS256", "{\"alg\":\"HS256\"", "{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
		"{\"alg\":\"none\",\"alg\":\"HS256\"}"};
	for(size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++){
		craft(t, sizeof t, hdrs[i], pl, &s1);
		rc = chat_token_verify(&s1, t, NOW, user, NULL);
		if(rc == CHAT_TOKEN_OK) fail_msg("header %s accepted", hdrs[i]);
	}
	/* a header with extra fields is fine */
	craft(t, sizeof t, "{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"x\"}", pl, &s1);
	assert_int_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_OK);
}

static void test_token_claims(void **state)
{
	(void)state;
	char t[CHAT_TOKEN_MAX], user[65];
	struct {
		const char *payload;
		enum chat_token_rc want;
	} cases[] = {
		{"{\"sub\":\"alice\",\"iat\":1}", CHAT_TOKEN_MALFORMED},                     /* no exp */
		{"{\"sub\":\"alice\",\"exp\":\"1800000000\"}", CHAT_TOKEN_MALFORMED},         /* exp string */
		{"{\"sub\":\"alice\",\"exp\":1800000000.5}", CHAT_TOKEN_MALFORMED},           /* exp real */
		{"{\"sub\":\"alice\",\"exp\":null}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"alice\",\"exp\":true}", CHAT_TOKEN_MALFORMED},
		{"{\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},                               /* no sub */
		{"{\"sub\":\"\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"a/b\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"alice:phone\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"#\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"al ice\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"caf\xc3\xa9\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"exp\":1800000000}",
			CHAT_TOKEN_MALFORMED}, /* 65 chars */
		{"{\"sub\":42,\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":[\"alice\"],\"exp\":1800000000}", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"alice\",\"sub\":\"root\",\"exp\":1800000000}", CHAT_TOKEN_MALFORMED}, /* duplicate */
		{"[\"alice\",1800000000]", CHAT_TOKEN_MALFORMED},
		{"\"alice\"", CHAT_TOKEN_MALFORMED},
		{"not json", CHAT_TOKEN_MALFORMED},
		{"{\"sub\":\"alice\",\"exp\":1700000000}", CHAT_TOKEN_EXPIRED}, /* exp == now */
		{"{\"sub\":\"alice\",\"exp\":-1}", CHAT_TOKEN_EXPIRED},
		{"{\"sub\":\"alice\",\"exp\":1700000001}", CHAT_TOKEN_OK},
		{"{\"sub\":\"alice\",\"exp\":1700000001,\"extra\":{\"x\":[1]}}", CHAT_TOKEN_OK},
	};
	for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++){
		craft(t, sizeof t, HS256, cases[i].payload, &s1);
		enum chat_token_rc rc = chat_token_verify(&s1, t, NOW, user, NULL);
		if(rc != cases[i].want) fail_msg("payload %s: got %d, want %d", cases[i].payload, rc, cases[i].want);
	}
}

static void test_token_garbage(void **state)
{
	(void)state;
	char user[65];
	char big[2000];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	big[600] = '.';
	big[1200] = '.';
	const char *g[] = {
		"", ".", "..", "...", "a.b.c", "a.b", "abc", "hunter2",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",                 /* no dots */
		"aaaaaaaaaaaa.bbbbbbbbbbbbbbbb",                     /* one dot */
		"aaaaaaaaaaaa.bbbbbbbbbbbbbbbb.ccccccccc.dddd",      /* three dots */
		".bbbbbbbbbbbbbbbbbbbbbbbbbbbb.cccccccccc",          /* empty header */
		"eyJhbGciOiJIUzI1NiJ9..cccccccccccccccccccccc",      /* empty payload */
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0=.cccccccccc",  /* padding */
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.ccccc ccccc",  /* space */
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.cccc+/cccc",   /* std alphabet */
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c",            /* impossible length */
		"e.eyJzdWIiOiJhIn0.cccccccccccccccccccccccccc",
		"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8.\xf7\xf6\xf5\xf4\xf3\xf2\xf1.\xf0\xef\xee\xed\xec",
		big,
	};
	for(size_t i = 0; i < sizeof g / sizeof g[0]; i++){
		enum chat_token_rc rc = chat_token_verify(&s1, g[i], NOW, user, NULL);
		if(rc == CHAT_TOKEN_OK) fail_msg("garbage %zu accepted", i);
	}
	assert_int_equal(chat_token_verify(&s1, NULL, NOW, user, NULL), CHAT_TOKEN_MALFORMED);
	assert_int_equal(chat_token_verify(&s1, "a.b.c", NOW, user, NULL), CHAT_TOKEN_MALFORMED);
	assert_int_equal(chat_token_verify(&s1, big, NOW, user, NULL), CHAT_TOKEN_MALFORMED);
	/* random bytes in the right shape never crash */
	uint32_t r = 12345;
	const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_..";
	for(int k = 0; k < 5000; k++){
		char t[200];
		size_t n = 1 + (r % 190);
		for(size_t i = 0; i < n; i++){
			r = r * 1103515245u + 12345u;
			t[i] = alpha[(r >> 16) % 66];
		}
		t[n] = '\0';
		assert_int_not_equal(chat_token_verify(&s1, t, NOW, user, NULL), CHAT_TOKEN_OK);
	}
}

static void test_token_like(void **state)
{
	(void)state;
	char tok[CHAT_TOKEN_MAX];
	assert_int_equal(chat_token_issue(&s1, "alice", NOW, 60, tok, NULL), 0);
	assert_true(chat_token_like(tok));
	assert_true(chat_token_like("aaaaaaaa.bbbbbbbb.cccccc")); /* 24 chars */
	assert_false(chat_token_like(""));
	assert_false(chat_token_like("hunter2"));
	assert_false(chat_token_like("correct horse battery staple"));
	assert_false(chat_token_like("a.b.c"));                    /* too short */
	assert_false(chat_token_like("aaaaaa.bbbbbb.cccccc"));     /* 20 chars */
	assert_true(chat_token_like("aaaaaaa.bbbbbb.cccccc"));     /* 21 chars */
	assert_false(chat_token_like("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
	assert_false(chat_token_like("aaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbb"));
	assert_false(chat_token_like("aaaaaaaa.bbbbbbbb.cccccc.ddddd"));
	assert_false(chat_token_like("aaaaaaaa.bbbbbbbb.cccccc="));
	assert_false(chat_token_like("aaaaaaaa.bbbb+bbb.cccccc"));
	assert_false(chat_token_like("aaaaaaaa.bbbb/bbb.cccccc"));
	assert_false(chat_token_like("aaaaaaaa.bbbb bbb.cccccc"));
	assert_false(chat_token_like("aaaaaaaa.bbbb\xc3\xa9""bb.cccccc"));
	char big[CHAT_TOKEN_MAX + 10];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	big[10] = '.';
	big[20] = '.';
	assert_false(chat_token_like(big));
	big[CHAT_TOKEN_MAX - 1] = '\0'; /* 511 chars */
	assert_true(chat_token_like(big));
	big[CHAT_TOKEN_MAX - 1] = 'a';
	big[CHAT_TOKEN_MAX] = '\0';     /* 512 chars */
	assert_false(chat_token_like(big));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_set),
		cmocka_unit_test(test_secret_load),
		cmocka_unit_test(test_pwhash_roundtrip),
		cmocka_unit_test(test_pwhash_malformed),
		cmocka_unit_test(test_pwhash_iter_field_strict),
		cmocka_unit_test(test_verifier),
		cmocka_unit_test(test_token_roundtrip),
		cmocka_unit_test(test_token_expired),
		cmocka_unit_test(test_token_other_key),
		cmocka_unit_test(test_token_tampered),
		cmocka_unit_test(test_token_alg),
		cmocka_unit_test(test_token_claims),
		cmocka_unit_test(test_token_garbage),
		cmocka_unit_test(test_token_like),
	};
	return cmocka_run_group_tests_name("auth", tests, setup_secrets, NULL);
}
