/* SPDX-License-Identifier: EPL-2.0
 * util.c: see util.h. The codecs are written out here rather than taken
 * from OpenSSL's EVP_Encode* because JWT needs base64url without padding
 * and because strict decoding (reject anything odd) matters for tokens.
 */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t chat_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t chat_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool chat_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while(i < len){
		unsigned char c = s[i];
		uint32_t cp;
		size_t n;
		if(c == 0) return false;
		if(c < 0x80){ i++; continue; }
		if(c >= 0xC2 && c <= 0xDF){ n = 1; cp = c & 0x1F; }
		else if(c >= 0xE0 && c <= 0xEF){ n = 2; cp = c & 0x0F; }
		else if(c >= 0xF0 && c <= 0xF4){ n = 3; cp = c & 0x07; }
		else return false;
		if(len - i <= n) return false;
		for(size_t k = 1; k <= n; k++){
			if((s[i + k] & 0xC0) != 0x80) return false;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return false;
		if(cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
		i += n + 1;
	}
	return true;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_enc(const char *alpha, bool pad, const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	size_t i = 0;
	for(; i + 2 < n; i += 3){
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		out[o++] = alpha[(v >> 6) & 63];
		out[o++] = alpha[v & 63];
	}
	if(i < n){
		uint32_t v = (uint32_t)in[i] << 16;
		if(i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
		out[o++] = alpha[v >> 18];
		out[o++] = alpha[(v >> 12) & 63];
		if(i + 1 < n) out[o++] = alpha[(v >> 6) & 63];
		else if(pad) out[o++] = '=';
		if(pad) out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

static int b64_val(const char *alpha, char c)
{
	const char *p = memchr(alpha, c, 64);
	return (p && c) ? (int)(p - alpha) : -1;
}

static long b64_dec(const char *alpha, bool pad, const char *in, size_t n, unsigned char *out)
{
	if(pad){
		if(n % 4) return -1;
		if(n >= 1 && in[n - 1] == '=') n--;
		if(n >= 1 && in[n - 1] == '=') n--;
	}
	if(n % 4 == 1) return -1;
	long o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for(size_t i = 0; i < n; i++){
		int v = b64_val(alpha, in[i]);
		if(v < 0) return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if(bits >= 8){
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* leftover bits must be zero (canonical encoding) */
	if(bits && (acc & ((1u << bits) - 1))) return -1;
	return o;
}

size_t chat_b64_encode(const unsigned char *in, size_t n, char *out) { return b64_enc(B64, true, in, n, out); }
long chat_b64_decode(const char *in, size_t n, unsigned char *out) { return b64_dec(B64, true, in, n, out); }
size_t chat_b64url_encode(const unsigned char *in, size_t n, char *out) { return b64_enc(B64URL, false, in, n, out); }
long chat_b64url_decode(const char *in, size_t n, unsigned char *out) { return b64_dec(B64URL, false, in, n, out); }

void chat_hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	for(size_t i = 0; i < n; i++){
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * n] = '\0';
}

bool chat_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	if(alen != blen) return false;
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;
	for(size_t i = 0; i < alen; i++) d |= (unsigned char)(x[i] ^ y[i]);
	return d == 0;
}

static int buf_grow(struct chat_buf *b, size_t need)
{
	if(b->len + need + 1 <= b->cap) return 0;
	size_t cap = b->cap ? b->cap : 256;
	while(cap < b->len + need + 1) cap *= 2;
	char *p = realloc(b->data, cap);
	if(!p) return -1;
	b->data = p;
	b->cap = cap;
	return 0;
}

int chat_buf_append(struct chat_buf *b, const void *p, size_t n)
{
	if(buf_grow(b, n)) return -1;
	if(n) memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int chat_buf_puts(struct chat_buf *b, const char *s)
{
	return chat_buf_append(b, s, strlen(s));
}

int chat_buf_printf(struct chat_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if(n < 0 || buf_grow(b, (size_t)n)) return -1;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void chat_buf_reset(struct chat_buf *b)
{
	b->len = 0;
	if(b->data) b->data[0] = '\0';
}

void chat_buf_free(struct chat_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

uint32_t chat_crc32c(uint32_t crc, const void *p, size_t n)
{
	const unsigned char *s = p;
	crc = ~crc;
	while(n--){
		crc ^= *s++;
		for(int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
	}
	return ~crc;
}

char *chat_read_file(const char *path, size_t max, size_t *len_out)
{
	FILE *f = fopen(path, "rb");
	if(!f) return NULL;
	char *buf = malloc(max + 1);
	if(!buf){ fclose(f); errno = ENOMEM; return NULL; }
	size_t n = fread(buf, 1, max + 1, f);
	int err = ferror(f);
	fclose(f);
	if(err || n > max){ free(buf); errno = err ? EIO : EFBIG; return NULL; }
	buf[n] = '\0';
	if(len_out) *len_out = n;
	return buf;
}
