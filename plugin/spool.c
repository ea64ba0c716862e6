/* SPDX-License-Identifier: EPL-2.0
 * spool.c: the writer's local log while PostgreSQL is unreachable.
 * One append-only file, spool_dir/chat.spool. A record is
 *   "CHS1" | u32 length | u32 CRC-32C(body) | body
 *   body = u32 count | count x (u32 len | bytes)
 * (little endian), appended with one write() and fsync'd before the writer
 * reports its messages durable. At open the file is scanned: whole records
 * are kept for replay; a torn tail (a crash inside write) is measured,
 * reported and cut off, never replayed. Only the writer thread calls this.
 */
#include "chat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define SPOOL_MAGIC 0x31534843u /* "CHS1" */
#define SPOOL_MAX_RECORD (256u << 20)

struct chat_spool {
	int fd;
	char path[4096];
	size_t records;
	off_t good_end;     /* end of the last whole record */
	size_t torn;
	off_t *offsets;     /* start of each record */
	size_t cap;
};

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int full_pread(int fd, void *buf, size_t n, off_t off)
{
	size_t done = 0;
	while(done < n){
		ssize_t r = pread(fd, (char *)buf + done, n - done, off + (off_t)done);
		if(r < 0 && errno == EINTR) continue;
		if(r <= 0) return -1;
		done += (size_t)r;
	}
	return 0;
}

static int note_offset(struct chat_spool *s, off_t off)
{
	if(s->records == s->cap){
		size_t ncap = s->cap ? s->cap * 2 : 64;
		off_t *n = realloc(s->offsets, ncap * sizeof *n);
		if(!n) return -1;
		s->offsets = n;
		s->cap = ncap;
	}
	s->offsets[s->records++] = off;
	return 0;
}

/* Validate the record at off; returns its total size or 0 when it is not
 * a whole, intact record. */
static size_t check_record(int fd, off_t off, off_t size)
{
	unsigned char hdr[12];
	if(size - off < 12 || full_pread(fd, hdr, 12, off)) return 0;
	uint32_t len = get32(hdr + 4);
	if(get32(hdr) != SPOOL_MAGIC || len > SPOOL_MAX_RECORD || size - off - 12 < (off_t)len) return 0;
	unsigned char *body = malloc(len ? len : 1);
	if(!body) return 0;
	size_t total = 0;
	if(full_pread(fd, body, len, off + 12) == 0 && chat_crc32c(0, body, len) == get32(hdr + 8)){
		total = 12 + (size_t)len;
	}
	free(body);
	return total;
}

struct chat_spool *chat_spool__open(const char *dir, char *err, size_t errlen)
{
	struct chat_spool *s = calloc(1, sizeof *s);
	if(!s){
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->fd = -1;
	if(mkdir(dir, 0700) && errno != EEXIST){
		snprintf(err, errlen, "cannot create spool dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	snprintf(s->path, sizeof s->path, "%s/chat.spool", dir);
	s->fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if(s->fd < 0){
		snprintf(err, errlen, "cannot open spool %s: %s", s->path, strerror(errno));
		goto fail;
	}
	struct stat st;
	if(fstat(s->fd, &st)){
		snprintf(err, errlen, "cannot stat spool %s: %s", s->path, strerror(errno));
		goto fail;
	}
	off_t off = 0;
	for(;;){
		size_t n = check_record(s->fd, off, st.st_size);
		if(!n) break;
		if(note_offset(s, off)){
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		off += (off_t)n;
	}
	s->good_end = off;
	s->torn = (size_t)(st.st_size - off);
	if(s->torn){
		/* cut the torn tail so that new records follow the last whole one */
		if(ftruncate(s->fd, off) || fsync(s->fd)){
			snprintf(err, errlen, "cannot cut torn tail of %s: %s", s->path, strerror(errno));
			goto fail;
		}
	}
	return s;
fail:
	chat_spool__close(s);
	return NULL;
}

void chat_spool__close(struct chat_spool *s)
{
	if(!s) return;
	if(s->fd >= 0) close(s->fd);
	free(s->offsets);
	free(s);
}

size_t chat_spool__pending(const struct chat_spool *s)
{
	return s ? s->records : 0;
}

size_t chat_spool__torn_bytes(const struct chat_spool *s)
{
	return s ? s->torn : 0;
}

int chat_spool__append(struct chat_spool *s, const char *const *v, const size_t *lens, size_t n)
{
	size_t body = 4;
	if(n > 1024) return -1; /* what chat_spool__read would refuse */
	for(size_t i = 0; i < n; i++) body += 4 + lens[i];
	if(body > SPOOL_MAX_RECORD) return -1;
	unsigned char *buf = malloc(12 + body);
	if(!buf) return -1;
	unsigned char *p = buf + 12;
	put32(p, (uint32_t)n);
	p += 4;
	for(size_t i = 0; i < n; i++){
		put32(p, (uint32_t)lens[i]);
		memcpy(p + 4, v[i], lens[i]);
		p += 4 + lens[i];
	}
	put32(buf, SPOOL_MAGIC);
	put32(buf + 4, (uint32_t)body);
	put32(buf + 8, chat_crc32c(0, buf + 12, body));

	int rc = -1;
	size_t total = 12 + body, done = 0;
	while(done < total){
		ssize_t w = pwrite(s->fd, buf + done, total - done, s->good_end + (off_t)done);
		if(w < 0 && errno == EINTR) continue;
		if(w <= 0) goto out;
		done += (size_t)w;
	}
	if(fdatasync(s->fd)) goto out;
	if(note_offset(s, s->good_end)) goto out;
	s->good_end += (off_t)total;
	rc = 0;
out:
	if(rc){
		/* leave no half record behind for the next append */
		if(ftruncate(s->fd, s->good_end) == 0) (void)fdatasync(s->fd);
	}
	free(buf);
	return rc;
}

int chat_spool__read(struct chat_spool *s, size_t k, char ***out, size_t *nout)
{
	*out = NULL;
	*nout = 0;
	if(k >= s->records) return 1;
	off_t off = s->offsets[k];
	unsigned char hdr[12];
	if(full_pread(s->fd, hdr, 12, off)) return -1;
	uint32_t len = get32(hdr + 4);
	if(get32(hdr) != SPOOL_MAGIC || len < 4 || len > SPOOL_MAX_RECORD) return -1;
	unsigned char *body = malloc(len);
	if(!body) return -1;
	int rc = -1;
	char **v = NULL;
	uint32_t n = 0, got = 0;
	if(full_pread(s->fd, body, len, off + 12) || chat_crc32c(0, body, len) != get32(hdr + 8)) goto out;
	n = get32(body);
	if(n > 1024) goto out;
	v = calloc(n ? n : 1, sizeof *v);
	if(!v) goto out;
	size_t pos = 4;
	for(got = 0; got < n; got++){
		if(len - pos < 4) goto out;
		uint32_t l = get32(body + pos);
		pos += 4;
		if(len - pos < l) goto out;
		v[got] = malloc((size_t)l + 1);
		if(!v[got]) goto out;
		memcpy(v[got], body + pos, l);
		v[got][l] = '\0';
		pos += l;
	}
	*out = v;
	*nout = n;
	v = NULL;
	rc = 0;
out:
	if(v){
		for(uint32_t i = 0; i < got; i++) free(v[i]);
		free(v);
	}
	free(body);
	return rc;
}

int chat_spool__truncate(struct chat_spool *s)
{
	if(ftruncate(s->fd, 0) || fsync(s->fd)) return -1;
	s->records = 0;
	s->good_end = 0;
	return 0;
}
