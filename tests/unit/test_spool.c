/* SPDX-License-Identifier: EPL-2.0
 * test_spool.c: the writer's local log while PostgreSQL is down
 * (plugin/spool.c). Whole records survive a reopen; a torn tail (crash
 * inside write) or a corrupted record is detected at open, cut off and
 * never replayed, and appending carries on after the last whole record.
 * Each test works in its own mkdtemp directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "util.h"

struct fx {
	char dir[512];
	char file[600];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if(!f) return -1;
	const char *t = getenv("TMPDIR");
	snprintf(f->dir, sizeof f->dir, "%s/chat-spool-XXXXXX", t && *t ? t : "/tmp");
	if(!mkdtemp(f->dir)){
		free(f);
		return -1;
	}
	snprintf(f->file, sizeof f->file, "%s/chat.spool", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[700];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	int rc = system(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

static struct chat_spool *open_ok(struct fx *f)
{
	char err[512] = "";
	struct chat_spool *s = chat_spool__open(f->dir, err, sizeof err);
	if(!s) fail_msg("spool open: %s", err);
	return s;
}

static off_t file_size(struct fx *f)
{
	struct stat st;
	assert_int_equal(stat(f->file, &st), 0);
	return st.st_size;
}

/* Record i: strings "rec<i>", a binary one with NUL bytes, and an empty one. */
static void append_rec(struct chat_spool *s, int i)
{
	char a[32], b[64];
	int al = snprintf(a, sizeof a, "rec%d", i);
	size_t bl = 0;
	for(int k = 0; k < 10 + i % 7; k++) b[bl++] = (char)((k * 37 + i) & 0xff);
	b[3] = '\0';
	const char *v[3] = {a, b, ""};
	size_t lens[3] = {(size_t)al, bl, 0};
	assert_int_equal(chat_spool__append(s, v, lens, 3), 0);
}

static void check_rec(struct chat_spool *s, size_t k, int i)
{
	char **v = NULL;
	size_t n = 0;
	int rc = chat_spool__read(s, k, &v, &n);
	if(rc != 0) fail_msg("read record %zu: %d", k, rc);
	assert_int_equal(n, 3);
	char a[32], b[64];
	snprintf(a, sizeof a, "rec%d", i);
	size_t bl = 0;
	for(int j = 0; j < 10 + i % 7; j++) b[bl++] = (char)((j * 37 + i) & 0xff);
	b[3] = '\0';
	assert_string_equal(v[0], a);
	assert_memory_equal(v[1], b, bl);
	assert_int_equal(v[1][bl], '\0');
	assert_string_equal(v[2], "");
	for(size_t j = 0; j < n; j++) free(v[j]);
	free(v);
}

static size_t rec_size(int i)
{
	/* header 12 + count 4 + 3 x len 4 + "rec<i>" + binary + 0 */
	char a[32];
	int al = snprintf(a, sizeof a, "rec%d", i);
	return 12 + 4 + 12 + (size_t)al + (size_t)(10 + i % 7);
}

static void test_append_read(void **state)
{
	struct fx *f = *state;
	struct chat_spool *s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 0);
	assert_int_equal(chat_spool__torn_bytes(s), 0);
	char **v = (char **)1;
	size_t n = 99;
	assert_int_equal(chat_spool__read(s, 0, &v, &n), 1);
	assert_null(v);
	assert_int_equal(n, 0);
	for(int i = 0; i < 50; i++){
		append_rec(s, i);
		assert_int_equal(chat_spool__pending(s), (size_t)i + 1);
	}
	size_t total = 0;
	for(int i = 0; i < 50; i++) total += rec_size(i);
	assert_int_equal(file_size(f), (off_t)total);
	for(int i = 49; i >= 0; i--) check_rec(s, (size_t)i, i);
	assert_int_equal(chat_spool__read(s, 50, &v, &n), 1);
	assert_int_equal(chat_spool__read(s, 1000000, &v, &n), 1);

	/* a record with no strings, and one with a large string */
	assert_int_equal(chat_spool__append(s, NULL, NULL, 0), 0);
	char *big = malloc(1 << 20);
	assert_non_null(big);
	memset(big, 'B', 1 << 20);
	const char *bv[1] = {big};
	size_t bl[1] = {1 << 20};
	assert_int_equal(chat_spool__append(s, bv, bl, 1), 0);
	assert_int_equal(chat_spool__pending(s), 52);
	assert_int_equal(chat_spool__read(s, 50, &v, &n), 0);
	assert_int_equal(n, 0);
	free(v);
	assert_int_equal(chat_spool__read(s, 51, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_memory_equal(v[0], big, 1 << 20);
	free(v[0]);
	free(v);
	free(big);
	chat_spool__close(s);
}

static void test_reopen_and_truncate(void **state)
{
	struct fx *f = *state;
	struct chat_spool *s = open_ok(f);
	for(int i = 0; i < 5; i++) append_rec(s, i);
	chat_spool__close(s);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 5);
	assert_int_equal(chat_spool__torn_bytes(s), 0);
	for(int i = 0; i < 5; i++) check_rec(s, (size_t)i, i);
	append_rec(s, 5);
	chat_spool__close(s);

	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 6);
	for(int i = 0; i < 6; i++) check_rec(s, (size_t)i, i);
	/* replayed: truncate */
	assert_int_equal(chat_spool__truncate(s), 0);
	assert_int_equal(chat_spool__pending(s), 0);
	assert_int_equal(file_size(f), 0);
	char **v;
	size_t n;
	assert_int_equal(chat_spool__read(s, 0, &v, &n), 1);
	/* appends after a truncate start from the beginning */
	append_rec(s, 100);
	append_rec(s, 101);
	assert_int_equal(chat_spool__pending(s), 2);
	check_rec(s, 0, 100);
	check_rec(s, 1, 101);
	assert_int_equal(file_size(f), (off_t)(rec_size(100) + rec_size(101)));
	chat_spool__close(s);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 2);
	assert_int_equal(chat_spool__torn_bytes(s), 0);
	check_rec(s, 0, 100);
	check_rec(s, 1, 101);
	chat_spool__close(s);
	chat_spool__close(NULL);
	assert_int_equal(chat_spool__pending(NULL), 0);
	assert_int_equal(chat_spool__torn_bytes(NULL), 0);
}

static void test_missing_dir_created(void **state)
{
	struct fx *f = *state;
	char sub[700], err[512];
	snprintf(sub, sizeof sub, "%s/sub", f->dir);
	struct chat_spool *s = chat_spool__open(sub, err, sizeof err);
	assert_non_null(s);
	append_rec(s, 1);
	chat_spool__close(s);
	struct stat st;
	assert_int_equal(stat(sub, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* a path that cannot be a directory */
	char file[700], bad[800];
	snprintf(file, sizeof file, "%s/plainfile", f->dir);
	FILE *fp = fopen(file, "w");
	assert_non_null(fp);
	fclose(fp);
	err[0] = '\0';
	assert_null(chat_spool__open(file, err, sizeof err));
	assert_true(strlen(err) > 0);
	snprintf(bad, sizeof bad, "%s/x/y/z", file);
	err[0] = '\0';
	assert_null(chat_spool__open(bad, err, sizeof err));
	assert_true(strlen(err) > 0);
}

static void truncate_by(struct fx *f, off_t cut)
{
	off_t sz = file_size(f);
	assert_int_equal(truncate(f->file, sz - cut), 0);
}

static void append_bytes(struct fx *f, const void *p, size_t n)
{
	int fd = open(f->file, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

static void test_torn_tail_truncated(void **state)
{
	struct fx *f = *state;
	/* cut the last record at every possible length */
	for(off_t cut = 1; cut < (off_t)rec_size(2); cut++){
		assert_int_equal(unlink(f->file) == 0 || errno == ENOENT, 1);
		struct chat_spool *s = open_ok(f);
		for(int i = 0; i < 3; i++) append_rec(s, i);
		chat_spool__close(s);
		off_t whole = (off_t)(rec_size(0) + rec_size(1));
		truncate_by(f, cut);

		s = open_ok(f);
		assert_int_equal(chat_spool__pending(s), 2);
		assert_int_equal(chat_spool__torn_bytes(s), (size_t)rec_size(2) - (size_t)cut);
		assert_int_equal(file_size(f), whole); /* cut at open */
		check_rec(s, 0, 0);
		check_rec(s, 1, 1);
		char **v;
		size_t n;
		assert_int_equal(chat_spool__read(s, 2, &v, &n), 1);
		/* a following append works and lands after the last whole record */
		append_rec(s, 7);
		assert_int_equal(chat_spool__pending(s), 3);
		check_rec(s, 2, 7);
		chat_spool__close(s);

		s = open_ok(f);
		assert_int_equal(chat_spool__pending(s), 3);
		assert_int_equal(chat_spool__torn_bytes(s), 0);
		check_rec(s, 0, 0);
		check_rec(s, 1, 1);
		check_rec(s, 2, 7);
		chat_spool__close(s);
	}
}

static void test_torn_tail_garbage(void **state)
{
	struct fx *f = *state;
	struct chat_spool *s = open_ok(f);
	for(int i = 0; i < 3; i++) append_rec(s, i);
	chat_spool__close(s);
	off_t whole = file_size(f);

	/* short garbage */
	append_bytes(f, "xxxxx", 5);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 3);
	assert_int_equal(chat_spool__torn_bytes(s), 5);
	assert_int_equal(file_size(f), whole);
	chat_spool__close(s);

	/* garbage longer than a header */
	char junk[100];
	memset(junk, 0xA5, sizeof junk);
	append_bytes(f, junk, sizeof junk);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 3);
	assert_int_equal(chat_spool__torn_bytes(s), 100);
	chat_spool__close(s);

	/* zeros (a preallocated or sparse tail) */
	memset(junk, 0, sizeof junk);
	append_bytes(f, junk, sizeof junk);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 3);
	assert_int_equal(chat_spool__torn_bytes(s), 100);
	chat_spool__close(s);

	/* a header with the magic that claims more than the file holds */
	unsigned char hdr[12] = {'C', 'H', 'S', '1', 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 0};
	append_bytes(f, hdr, sizeof hdr);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 3);
	assert_int_equal(chat_spool__torn_bytes(s), 12);
	/* a header claiming 4 GiB */
	chat_spool__close(s);
	unsigned char hdr2[16] = {'C', 'H', 'S', '1', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3, 4};
	append_bytes(f, hdr2, sizeof hdr2);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 3);
	assert_int_equal(chat_spool__torn_bytes(s), 16);
	append_rec(s, 3);
	chat_spool__close(s);

	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 4);
	assert_int_equal(chat_spool__torn_bytes(s), 0);
	for(int i = 0; i < 4; i++) check_rec(s, (size_t)i, i);
	chat_spool__close(s);

	/* a file that is all garbage */
	assert_int_equal(unlink(f->file), 0);
	int fd = open(f->file, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	append_bytes(f, "not a spool file at all", 23);
	s = open_ok(f);
	assert_int_equal(chat_spool__pending(s), 0);
	assert_int_equal(chat_spool__torn_bytes(s), 23);
	assert_int_equal(file_size(f), 0);
	append_rec(s, 9);
	check_rec(s, 0, 9);
	chat_spool__close(s);
}

static void flip_byte(struct fx *f, off_t at)
{
	int fd = open(f->file, O_RDWR);
	assert_true(fd >= 0);
	unsigned char c;
	assert_int_equal(pread(fd, &c, 1, at), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, at), 1);
	close(fd);
}

static void test_flipped_byte(void **state)
{
	struct fx *f = *state;
	/* flip one byte of record 2's body (of 5): records 2..4 no longer count */
	off_t r2 = (off_t)(rec_size(0) + rec_size(1));
	for(off_t where = 0; where < (off_t)rec_size(2); where++){
		unlink(f->file);
		struct chat_spool *s = open_ok(f);
		for(int i = 0; i < 5; i++) append_rec(s, i);
		chat_spool__close(s);
		off_t size = file_size(f);
		flip_byte(f, r2 + where);

		s = open_ok(f);
		if(chat_spool__pending(s) != 2)
			fail_msg("flip at record byte %lld: %zu records pending, want 2", (long long)where, chat_spool__pending(s));
		assert_int_equal(chat_spool__torn_bytes(s), (size_t)(size - r2));
		check_rec(s, 0, 0);
		check_rec(s, 1, 1);
		char **v;
		size_t n;
		assert_int_equal(chat_spool__read(s, 2, &v, &n), 1);
		append_rec(s, 20);
		chat_spool__close(s);
		s = open_ok(f);
		assert_int_equal(chat_spool__pending(s), 3);
		check_rec(s, 2, 20);
		chat_spool__close(s);
	}
}

/* The record is rewritten on disk after open: chat_spool__read notices. */
static void test_corruption_after_open(void **state)
{
	struct fx *f = *state;
	struct chat_spool *s = open_ok(f);
	for(int i = 0; i < 3; i++) append_rec(s, i);
	flip_byte(f, (off_t)(rec_size(0) + 12 + 6));
	char **v = NULL;
	size_t n = 0;
	check_rec(s, 0, 0);
	assert_int_equal(chat_spool__read(s, 1, &v, &n), -1);
	assert_null(v);
	check_rec(s, 2, 2);
	chat_spool__close(s);
}

static void write_raw_record(struct fx *f, const unsigned char *body, uint32_t len)
{
	unsigned char hdr[12] = {'C', 'H', 'S', '1'};
	uint32_t crc = chat_crc32c(0, body, len);
	for(int i = 0; i < 4; i++){
		hdr[4 + i] = (unsigned char)(len >> (8 * i));
		hdr[8 + i] = (unsigned char)(crc >> (8 * i));
	}
	append_bytes(f, hdr, 12);
	if(len) append_bytes(f, body, len);
}

/* Records with a good CRC but an impossible layout (written by a buggy
 * writer, never by chat_spool__append): reading them fails cleanly, and
 * whole records around them stay readable. */
static void test_crc_valid_but_malformed_body(void **state)
{
	struct fx *f = *state;
	struct chat_spool *s = open_ok(f);
	append_rec(s, 0);
	chat_spool__close(s);
	write_raw_record(f, NULL, 0);                                  /* no count */
	const unsigned char more[] = {2, 0, 0, 0, 1, 0, 0, 0, 'x'};    /* count 2, one string */
	write_raw_record(f, more, sizeof more);
	const unsigned char over[] = {1, 0, 0, 0, 9, 0, 0, 0, 'x'};    /* length past the end */
	write_raw_record(f, over, sizeof over);
	const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff};         /* absurd count */
	write_raw_record(f, huge, sizeof huge);
	s = open_ok(f);
	append_rec(s, 1);
	size_t n = chat_spool__pending(s);
	assert_true(n >= 2);
	check_rec(s, 0, 0);
	check_rec(s, n - 1, 1);
	for(size_t k = 1; k + 1 < n; k++){
		char **v = (char **)1;
		size_t nv = 99;
		assert_int_equal(chat_spool__read(s, k, &v, &nv), -1);
		assert_null(v);
		assert_int_equal(nv, 0);
	}
	chat_spool__close(s);
}

/* BUG (latent): chat_spool__append accepts any number of strings and
 * reports the record durable, but chat_spool__read refuses records with
 * more than 1024 strings (-1, "corrupt"), so such a record can never be
 * replayed. store.c appends a fixed NCOLS strings today, so nothing
 * reaches this yet; append should refuse what read will not take back. */
static void test_append_read_agree_on_string_count(void **state)
{
	struct fx *f = *state;
	struct chat_spool *s = open_ok(f);
	size_t n = 1025;
	const char **v = calloc(n, sizeof *v);
	size_t *lens = calloc(n, sizeof *lens);
	assert_non_null(v);
	assert_non_null(lens);
	for(size_t i = 0; i < n; i++) v[i] = "s";
	for(size_t i = 0; i < n; i++) lens[i] = 1;
	int arc = chat_spool__append(s, v, lens, n);
	free(v);
	free(lens);
	char **out = NULL;
	size_t nout = 0;
	int rrc = arc == 0 ? chat_spool__read(s, 0, &out, &nout) : 0;
	if(out){
		for(size_t i = 0; i < nout; i++) free(out[i]);
		free(out);
	}
	chat_spool__close(s);
	if(arc == 0 && rrc != 0)
		fail_msg("a %zu-string record was appended (durable) but reads back as %d (corrupt)", n, rrc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_and_truncate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_dir_created, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flipped_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corruption_after_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crc_valid_but_malformed_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_read_agree_on_string_count, setup, teardown),
	};
	return cmocka_run_group_tests_name("spool", tests, NULL, NULL);
}
