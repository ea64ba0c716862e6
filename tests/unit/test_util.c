/* SPDX-License-Identifier: EPL-2.0
 * test_util.c: strict UTF-8, base64/base64url (canonical only), hex,
 * constant-time compare, CRC-32C, the growable buffer and chat_read_file
 * (common/util.c). Tokens and the spool depend on these being exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint8_t rnd8(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint8_t)(rng >> 24);
}

/* ---- UTF-8 ------------------------------------------------------------ */

#define U8(s) chat_utf8_valid((s), sizeof(s) - 1)

static void test_utf8_valid(void **state)
{
	(void)state;
	assert_true(chat_utf8_valid("", 0));
	assert_true(U8("hello"));
	assert_true(U8("\x7f"));
	assert_true(U8("\xc2\x80"));             /* U+0080, smallest 2-byte */
	assert_true(U8("caf\xc3\xa9"));          /* é */
	assert_true(U8("\xdf\xbf"));             /* U+07FF */
	assert_true(U8("\xe0\xa0\x80"));         /* U+0800, smallest 3-byte */
	assert_true(U8("\xe2\x82\xac"));         /* € */
	assert_true(U8("\xed\x9f\xbf"));         /* U+D7FF, just below surrogates */
	assert_true(U8("\xee\x80\x80"));         /* U+E000, just above */
	assert_true(U8("\xef\xbf\xbf"));         /* U+FFFF */
	assert_true(U8("\xf0\x90\x80\x80"));     /* U+10000, smallest 4-byte */
	assert_true(U8("\xf0\x9f\x98\x80"));     /* emoji */
	assert_true(U8("\xf4\x8f\xbf\xbf"));     /* U+10FFFF */
	assert_true(U8("a\xc3\xa9z\xe2\x82\xac\xf0\x9f\x98\x80!"));
	/* only the counted range is checked */
	assert_true(chat_utf8_valid("ab\xff", 2));
}

static void test_utf8_invalid(void **state)
{
	(void)state;
	/* NUL */
	assert_false(chat_utf8_valid("\0", 1));
	assert_false(chat_utf8_valid("a\0b", 3));
	/* overlongs */
	assert_false(U8("\xc0\x80"));
	assert_false(U8("\xc0\xaf"));
	assert_false(U8("\xc1\xbf"));
	assert_false(U8("\xe0\x80\x80"));
	assert_false(U8("\xe0\x80\xaf"));
	assert_false(U8("\xe0\x9f\xbf"));
	assert_false(U8("\xf0\x80\x80\x80"));
	assert_false(U8("\xf0\x8f\xbf\xbf"));
	/* surrogates */
	assert_false(U8("\xed\xa0\x80"));
	assert_false(U8("\xed\xbf\xbf"));
	assert_false(U8("\xed\xa0\xbd\xed\xb8\x80")); /* CESU-8 pair */
	/* beyond U+10FFFF */
	assert_false(U8("\xf4\x90\x80\x80"));
	assert_false(U8("\xf5\x80\x80\x80"));
	assert_false(U8("\xf7\xbf\xbf\xbf"));
	assert_false(U8("\xf8\x88\x80\x80\x80"));
	assert_false(U8("\xfc\x84\x80\x80\x80\x80"));
	assert_false(U8("\xfe"));
	assert_false(U8("\xff"));
	/* lone continuation bytes */
	assert_false(U8("\x80"));
	assert_false(U8("a\xbf"));
	/* truncated sequences, at the end and followed by ASCII */
	assert_false(U8("\xc3"));
	assert_false(U8("\xe2\x82"));
	assert_false(U8("\xe2"));
	assert_false(U8("\xf0\x9f\x98"));
	assert_false(U8("\xf0\x9f"));
	assert_false(U8("\xf0"));
	assert_false(U8("\xc3z"));
	assert_false(U8("\xe2\x82z"));
	assert_false(U8("\xf0\x9f\x98z"));
	/* a NUL as a continuation byte */
	assert_false(chat_utf8_valid("\xc3\0", 2));
	/* a valid sequence cut by the counted length */
	assert_false(chat_utf8_valid("\xe2\x82\xac", 2));
	assert_false(chat_utf8_valid("\xf0\x9f\x98\x80", 3));
}

/* ---- base64 ----------------------------------------------------------- */

static void test_b64_vectors(void **state)
{
	(void)state;
	static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	for(size_t i = 0; i < 7; i++){
		char out[32];
		unsigned char dec[32];
		size_t n = strlen(plain[i]);
		assert_int_equal(chat_b64_encode((const unsigned char *)plain[i], n, out), strlen(std[i]));
		assert_string_equal(out, std[i]);
		assert_int_equal(chat_b64url_encode((const unsigned char *)plain[i], n, out), strlen(url[i]));
		assert_string_equal(out, url[i]);
		assert_int_equal(chat_b64_decode(std[i], strlen(std[i]), dec), (long)n);
		assert_memory_equal(dec, plain[i], n);
		assert_int_equal(chat_b64url_decode(url[i], strlen(url[i]), dec), (long)n);
		assert_memory_equal(dec, plain[i], n);
	}
	/* the alphabets differ in the last two characters */
	const unsigned char hi[] = {0xfb, 0xff, 0xbf};
	char out[8];
	chat_b64_encode(hi, 3, out);
	assert_string_equal(out, "+/+/");
	chat_b64url_encode(hi, 3, out);
	assert_string_equal(out, "-_-_");
}

static void test_b64_roundtrip_all_lengths(void **state)
{
	(void)state;
	for(int round = 0; round < 20; round++){
		for(size_t n = 0; n <= 40; n++){
			unsigned char in[40], dec[64];
			char enc[64];
			for(size_t i = 0; i < n; i++) in[i] = rnd8();
			if(round == 0) memset(in, 0, n);
			if(round == 1) memset(in, 0xff, n);

			size_t el = chat_b64_encode(in, n, enc);
			assert_int_equal(el, 4 * ((n + 2) / 3));
			assert_int_equal(strlen(enc), el);
			memset(dec, 0xAA, sizeof dec);
			assert_int_equal(chat_b64_decode(enc, el, dec), (long)n);
			if(n) assert_memory_equal(dec, in, n);

			size_t ul = chat_b64url_encode(in, n, enc);
			assert_int_equal(ul, (4 * n + 2) / 3);
			assert_int_equal(strlen(enc), ul);
			assert_null(strpbrk(enc, "+/="));
			assert_int_equal(chat_b64url_decode(enc, ul, dec), (long)n);
			if(n) assert_memory_equal(dec, in, n);
		}
	}
}

static void test_b64_noncanonical_rejected(void **state)
{
	(void)state;
	unsigned char dec[64];
	/* unused low bits set */
	assert_int_equal(chat_b64_decode("Zh==", 4, dec), -1);
	assert_int_equal(chat_b64_decode("Zm9=", 4, dec), -1);
	assert_int_equal(chat_b64url_decode("Zh", 2, dec), -1);
	assert_int_equal(chat_b64url_decode("Zm9", 3, dec), -1);
	/* every non-canonical last character of a 1-byte and 2-byte tail */
	const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	for(int v = 0; v < 64; v++){
		char s1[3] = {'Z', alpha[v], 0}, s2[4] = {'Z', 'm', alpha[v], 0};
		long want1 = (v & 15) ? -1 : 1, want2 = (v & 3) ? -1 : 2;
		assert_int_equal(chat_b64url_decode(s1, 2, dec), want1);
		assert_int_equal(chat_b64url_decode(s2, 3, dec), want2);
	}
	/* padding: missing, short, too much, in the middle, where not needed */
	assert_int_equal(chat_b64_decode("Zg", 2, dec), -1);
	assert_int_equal(chat_b64_decode("Zg=", 3, dec), -1);
	assert_int_equal(chat_b64_decode("Z===", 4, dec), -1);
	assert_int_equal(chat_b64_decode("====", 4, dec), -1);
	assert_int_equal(chat_b64_decode("Zg==Zg==", 8, dec), -1);
	assert_int_equal(chat_b64_decode("Zm9v====", 8, dec), -1);
	assert_int_equal(chat_b64_decode("Z=9v", 4, dec), -1);
	assert_int_equal(chat_b64url_decode("Zg==", 4, dec), -1);
	assert_int_equal(chat_b64url_decode("Zm8=", 4, dec), -1);
	/* a length that no encoding has */
	assert_int_equal(chat_b64url_decode("Z", 1, dec), -1);
	assert_int_equal(chat_b64url_decode("Zm9vY", 5, dec), -1);
	assert_int_equal(chat_b64_decode("Zm9vY", 5, dec), -1);
}

static void test_b64_bad_chars(void **state)
{
	(void)state;
	unsigned char dec[64];
	/* the other alphabet */
	assert_int_equal(chat_b64_decode("+/-_", 4, dec), -1);
	assert_int_equal(chat_b64_decode("ab-d", 4, dec), -1);
	assert_int_equal(chat_b64url_decode("ab+d", 4, dec), -1);
	assert_int_equal(chat_b64url_decode("ab/d", 4, dec), -1);
	assert_int_equal(chat_b64_decode("+/+/", 4, dec), 3);
	assert_int_equal(chat_b64url_decode("-_-_", 4, dec), 3);
	/* whitespace, punctuation, NUL inside the counted range, high bytes */
	const char *bad[] = {"Zm9 ", " Zm9", "Zm\n9", "Zm.v", "Zm9*", "Zm\xc3\xa9", "Zm9\x80"};
	for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++){
		assert_int_equal(chat_b64url_decode(bad[i], strlen(bad[i]), dec), -1);
		assert_int_equal(chat_b64_decode(bad[i], 4, dec), -1);
	}
	const char nul[] = {'Z', 'm', '\0', 'v'};
	assert_int_equal(chat_b64url_decode(nul, 4, dec), -1);
	assert_int_equal(chat_b64_decode(nul, 4, dec), -1);
}

/* ---- hex, compare, CRC -------------------------------------------------- */

static void test_hex(void **state)
{
	(void)state;
	char out[64];
	chat_hex_encode((const unsigned char *)"", 0, out);
	assert_string_equal(out, "");
	const unsigned char b[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	chat_hex_encode(b, sizeof b, out);
	assert_string_equal(out, "00017f80abff");
}

static void test_ct_equal(void **state)
{
	(void)state;
	assert_true(chat_ct_equal("abc", 3, "abc", 3));
	assert_true(chat_ct_equal("", 0, "", 0));
	assert_true(chat_ct_equal("a\0b", 3, "a\0b", 3));
	assert_false(chat_ct_equal("abc", 3, "abd", 3));
	assert_false(chat_ct_equal("abc", 3, "bbc", 3));
	assert_false(chat_ct_equal("abc", 3, "abcd", 4));
	assert_false(chat_ct_equal("abc", 3, "ab", 2));
	assert_false(chat_ct_equal("a\0b", 3, "a\0c", 3));
	unsigned char x[256], y[256];
	for(int i = 0; i < 256; i++) x[i] = y[i] = (unsigned char)i;
	assert_true(chat_ct_equal(x, 256, y, 256));
	for(int i = 0; i < 256; i++){
		y[i] ^= 0x01;
		assert_false(chat_ct_equal(x, 256, y, 256));
		y[i] ^= 0x01;
	}
}

static void test_crc32c(void **state)
{
	(void)state;
	assert_int_equal(chat_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(chat_crc32c(0, "", 0), 0u);
	/* incremental over any split equals one pass */
	for(size_t k = 0; k <= 9; k++){
		uint32_t c = chat_crc32c(0, "123456789", k);
		assert_int_equal(chat_crc32c(c, "123456789" + k, 9 - k), 0xE3069283u);
	}
	/* RFC 3720 B.4: 32 zero bytes, 32 0xff bytes */
	unsigned char z[32];
	memset(z, 0, sizeof z);
	assert_int_equal(chat_crc32c(0, z, 32), 0x8A9136AAu);
	memset(z, 0xff, sizeof z);
	assert_int_equal(chat_crc32c(0, z, 32), 0x62A8AB43u);
}

/* ---- chat_buf ---------------------------------------------------------- */

static void test_buf_growth(void **state)
{
	(void)state;
	struct chat_buf b = {0};
	for(int i = 0; i < 10000; i++){
		char c = (char)('a' + i % 26);
		assert_int_equal(chat_buf_append(&b, &c, 1), 0);
		assert_true(b.cap > b.len);
		assert_int_equal(b.data[b.len], '\0');
	}
	assert_int_equal(b.len, 10000);
	for(int i = 0; i < 10000; i++) assert_int_equal(b.data[i], 'a' + i % 26);
	/* one large append, binary with NUL */
	char big[70000];
	for(size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7);
	assert_int_equal(chat_buf_append(&b, big, sizeof big), 0);
	assert_int_equal(b.len, 10000 + sizeof big);
	assert_memory_equal(b.data + 10000, big, sizeof big);
	assert_int_equal(b.data[b.len], '\0');
	/* reset keeps the storage, empties the string */
	size_t cap = b.cap;
	chat_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, cap);
	assert_string_equal(b.data, "");
	assert_int_equal(chat_buf_puts(&b, "x="), 0);
	assert_int_equal(chat_buf_printf(&b, "%d,%s,%05.1f", 42, "y", 2.5), 0);
	assert_string_equal(b.data, "x=42,y,002.5");
	assert_int_equal(b.len, strlen("x=42,y,002.5"));
	/* a printf larger than the current capacity */
	chat_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	char s[5000];
	memset(s, 'q', sizeof s - 1);
	s[sizeof s - 1] = '\0';
	assert_int_equal(chat_buf_puts(&b, "<"), 0);
	assert_int_equal(chat_buf_printf(&b, "%s>", s), 0);
	assert_int_equal(b.len, 1 + 4999 + 1);
	assert_int_equal(b.data[0], '<');
	assert_int_equal(b.data[5000], '>');
	assert_int_equal(b.data[5001], '\0');
	/* empty appends on an empty buffer */
	chat_buf_free(&b);
	assert_int_equal(chat_buf_append(&b, "", 0), 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, "");
	chat_buf_free(&b);
	chat_buf_reset(&b); /* reset of a freed buffer is harmless */
	chat_buf_free(&b);
}

/* ---- chat_read_file ---------------------------------------------------- */

static char tmpdir[512];

static int setup_dir(void **state)
{
	(void)state;
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof tmpdir, "%s/chat-util-XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	(void)state;
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static void test_read_file(void **state)
{
	(void)state;
	char path[600];
	size_t len = 99;
	snprintf(path, sizeof path, "%s/f", tmpdir);

	/* missing */
	errno = 0;
	assert_null(chat_read_file(path, 100, &len));
	assert_int_equal(errno, ENOENT);

	/* empty */
	write_file(path, "", 0);
	char *s = chat_read_file(path, 0, &len);
	assert_non_null(s);
	assert_int_equal(len, 0);
	assert_string_equal(s, "");
	free(s);

	/* exactly max bytes, binary, NUL-terminated on return */
	char data[100];
	for(int i = 0; i < 100; i++) data[i] = (char)(i + 1);
	data[50] = '\0';
	write_file(path, data, 100);
	s = chat_read_file(path, 100, &len);
	assert_non_null(s);
	assert_int_equal(len, 100);
	assert_memory_equal(s, data, 100);
	assert_int_equal(s[100], '\0');
	free(s);
	s = chat_read_file(path, 1000, NULL);
	assert_non_null(s);
	free(s);

	/* one byte over */
	errno = 0;
	len = 7;
	assert_null(chat_read_file(path, 99, &len));
	assert_int_equal(errno, EFBIG);
	assert_int_equal(len, 7);
	errno = 0;
	assert_null(chat_read_file(path, 0, &len));
	assert_int_equal(errno, EFBIG);

	/* a directory is not a file */
	assert_null(chat_read_file(tmpdir, 100, &len));
	unlink(path);
}

static void test_clocks(void **state)
{
	(void)state;
	int64_t a = chat_now_ms();
	assert_true(a > 1600000000000LL);
	int64_t m1 = chat_mono_ns(), m2 = chat_mono_ns();
	assert_true(m2 >= m1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_utf8_invalid),
		cmocka_unit_test(test_b64_vectors),
		cmocka_unit_test(test_b64_roundtrip_all_lengths),
		cmocka_unit_test(test_b64_noncanonical_rejected),
		cmocka_unit_test(test_b64_bad_chars),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_ct_equal),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_buf_growth),
		cmocka_unit_test_setup_teardown(test_read_file, setup_dir, teardown_dir),
		cmocka_unit_test(test_clocks),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
