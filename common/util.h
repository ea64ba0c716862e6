/* SPDX-License-Identifier: EPL-2.0
 * util.h: small shared helpers with no broker or database dependency:
 * clocks, UTF-8 validation, base64/hex codecs, constant-time compare and
 * a growable byte buffer. Everything here is thread-safe and uses malloc.
 */
#ifndef CHAT_UTIL_H
#define CHAT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wall clock in milliseconds since the epoch (event timestamps). */
int64_t chat_now_ms(void);
/* Monotonic clock in nanoseconds (timers, latency). */
int64_t chat_mono_ns(void);

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF, no NUL). */
bool chat_utf8_valid(const char *s, size_t len);

/* Base64 (standard alphabet, padded) into out (>= 4*((n+2)/3)+1 bytes). */
size_t chat_b64_encode(const unsigned char *in, size_t n, char *out);
/* Returns decoded length or -1; out needs n/4*3+3 bytes. */
long chat_b64_decode(const char *in, size_t n, unsigned char *out);
/* Base64url without padding (JWT). out needs 4*((n+2)/3)+1 bytes. */
size_t chat_b64url_encode(const unsigned char *in, size_t n, char *out);
/* Returns decoded length or -1; out needs n*3/4+3 bytes. */
long chat_b64url_decode(const char *in, size_t n, unsigned char *out);

/* Lower-case hex into out (2n+1 bytes). */
void chat_hex_encode(const unsigned char *in, size_t n, char *out);

/* Constant-time equality of two equal-length byte strings; false when the
 * lengths differ (the length is not secret). */
bool chat_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Growable buffer; all functions return 0 or -1 (out of memory). The
 * owner frees buf->data with free(). */
struct chat_buf {
	char *data;
	size_t len;
	size_t cap;
};
int chat_buf_append(struct chat_buf *b, const void *p, size_t n);
int chat_buf_puts(struct chat_buf *b, const char *s);
int chat_buf_printf(struct chat_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void chat_buf_reset(struct chat_buf *b);
void chat_buf_free(struct chat_buf *b);

/* CRC-32C of a byte range (spool framing). */
uint32_t chat_crc32c(uint32_t crc, const void *p, size_t n);

/* Read a whole small file (<= max bytes) into a malloc'd NUL-terminated
 * buffer. Returns NULL and sets errno on failure. */
char *chat_read_file(const char *path, size_t max, size_t *len_out);

#endif
