/* SPDX-License-Identifier: EPL-2.0
 * test_hmap.c: the open-addressing map (common/hmap.c) behind the broker's
 * O(1) lookups: insert/get/replace/delete/iterate at 100k keys, tombstone
 * reuse (a churning map must not grow without bound), binary keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"

#define N 100000
#define V(i) ((void *)(uintptr_t)((i) + 1))

static size_t key(char *buf, int i)
{
	return (size_t)sprintf(buf, "user-%d", i);
}

static void test_empty(void **state)
{
	(void)state;
	struct chat_hmap m;
	chat_hmap_init(&m);
	assert_null(chat_hmap_get(&m, "x"));
	assert_null(chat_hmap_getn(&m, "", 0));
	assert_null(chat_hmap_del(&m, "x"));
	size_t it = 0;
	const char *k;
	assert_false(chat_hmap_next(&m, &it, &k, NULL, NULL));
	chat_hmap_free(&m);
	chat_hmap_free(&m); /* twice is harmless */
}

static void test_basic(void **state)
{
	(void)state;
	struct chat_hmap m;
	chat_hmap_init(&m);
	void *old = (void *)1;
	assert_int_equal(chat_hmap_put(&m, "alice", V(1), &old), 0);
	assert_null(old);
	assert_int_equal(chat_hmap_put(&m, "bob", V(2), NULL), 0);
	assert_int_equal(m.n, 2);
	assert_ptr_equal(chat_hmap_get(&m, "alice"), V(1));
	assert_ptr_equal(chat_hmap_get(&m, "bob"), V(2));
	assert_null(chat_hmap_get(&m, "carol"));
	assert_null(chat_hmap_get(&m, "alic"));
	assert_null(chat_hmap_get(&m, "alicea"));
	/* replace */
	assert_int_equal(chat_hmap_put(&m, "alice", V(10), &old), 0);
	assert_ptr_equal(old, V(1));
	assert_int_equal(m.n, 2);
	assert_ptr_equal(chat_hmap_get(&m, "alice"), V(10));
	/* delete */
	assert_ptr_equal(chat_hmap_del(&m, "alice"), V(10));
	assert_null(chat_hmap_get(&m, "alice"));
	assert_null(chat_hmap_del(&m, "alice"));
	assert_int_equal(m.n, 1);
	assert_ptr_equal(chat_hmap_get(&m, "bob"), V(2));
	/* a NULL value is stored (get cannot tell it from absent, iteration can) */
	assert_int_equal(chat_hmap_put(&m, "nul", NULL, NULL), 0);
	assert_int_equal(m.n, 2);
	/* keys are copied */
	char k[16] = "temp";
	assert_int_equal(chat_hmap_put(&m, k, V(3), NULL), 0);
	strcpy(k, "XXXX");
	assert_ptr_equal(chat_hmap_get(&m, "temp"), V(3));
	assert_null(chat_hmap_get(&m, "XXXX"));
	chat_hmap_free(&m);
}

static void test_100k(void **state)
{
	(void)state;
	struct chat_hmap m;
	chat_hmap_init(&m);
	char buf[32];
	for(int i = 0; i < N; i++){
		size_t n = key(buf, i);
		assert_int_equal(chat_hmap_putn(&m, buf, n, V(i), NULL), 0);
	}
	assert_int_equal(m.n, N);
	assert_true(m.used * 10 < m.cap * 7);
	assert_int_equal(m.cap & (m.cap - 1), 0);
	for(int i = 0; i < N; i++){
		key(buf, i);
		if(chat_hmap_get(&m, buf) != V(i)) fail_msg("key %s lost", buf);
	}
	assert_null(chat_hmap_get(&m, "user-100000"));
	assert_null(chat_hmap_get(&m, "user-"));

	/* replace every even key */
	for(int i = 0; i < N; i += 2){
		void *old = NULL;
		key(buf, i);
		assert_int_equal(chat_hmap_put(&m, buf, V(i + N), &old), 0);
		assert_ptr_equal(old, V(i));
	}
	assert_int_equal(m.n, N);
	/* delete every key divisible by 3 */
	size_t live = N;
	for(int i = 0; i < N; i += 3){
		key(buf, i);
		void *want = (i % 2) ? V(i) : V(i + N);
		assert_ptr_equal(chat_hmap_del(&m, buf), want);
		live--;
	}
	assert_int_equal(m.n, live);
	for(int i = 0; i < N; i++){
		key(buf, i);
		void *got = chat_hmap_get(&m, buf);
		void *want = (i % 3 == 0) ? NULL : (i % 2) ? V(i) : V(i + N);
		if(got != want) fail_msg("key %s: %p, want %p", buf, got, want);
	}
	/* iterate: every live key exactly once with its value */
	unsigned char *seen = calloc(N, 1);
	assert_non_null(seen);
	size_t it = 0, count = 0, klen;
	const char *k;
	void *v;
	while(chat_hmap_next(&m, &it, &k, &klen, &v)){
		int i;
		assert_int_equal(sscanf(k, "user-%d", &i), 1);
		assert_true(i >= 0 && i < N);
		assert_int_equal(klen, strlen(k));
		assert_int_not_equal(i % 3, 0);
		assert_false(seen[i]);
		seen[i] = 1;
		assert_ptr_equal(v, (i % 2) ? V(i) : V(i + N));
		count++;
	}
	assert_int_equal(count, live);
	free(seen);
	/* re-insert the deleted keys */
	for(int i = 0; i < N; i += 3){
		key(buf, i);
		assert_int_equal(chat_hmap_put(&m, buf, V(i), NULL), 0);
	}
	assert_int_equal(m.n, N);
	for(int i = 0; i < N; i += 3){
		key(buf, i);
		assert_ptr_equal(chat_hmap_get(&m, buf), V(i));
	}
	/* delete everything */
	for(int i = 0; i < N; i++){
		key(buf, i);
		assert_non_null(chat_hmap_del(&m, buf));
	}
	assert_int_equal(m.n, 0);
	it = 0;
	assert_false(chat_hmap_next(&m, &it, NULL, NULL, NULL));
	chat_hmap_free(&m);
}

static void test_tombstone_reuse(void **state)
{
	(void)state;
	struct chat_hmap m;
	chat_hmap_init(&m);
	char buf[32];
	for(int i = 0; i < 10; i++){
		key(buf, i);
		assert_int_equal(chat_hmap_put(&m, buf, V(i), NULL), 0);
	}
	/* delete and put back the same key: its tombstone is reused */
	size_t used = m.used, cap = m.cap;
	for(int r = 0; r < 1000; r++){
		assert_ptr_equal(chat_hmap_del(&m, "user-3"), V(3));
		assert_int_equal(m.n, 9);
		assert_int_equal(chat_hmap_put(&m, "user-3", V(3), NULL), 0);
	}
	assert_int_equal(m.used, used);
	assert_int_equal(m.cap, cap);
	/* churn through 200k distinct short-lived keys: capacity stays small */
	for(int i = 0; i < 200000; i++){
		size_t n = (size_t)sprintf(buf, "tmp-%d", i);
		assert_int_equal(chat_hmap_putn(&m, buf, n, V(i), NULL), 0);
		assert_ptr_equal(chat_hmap_deln(&m, buf, n), V(i));
	}
	assert_int_equal(m.n, 10);
	assert_true(m.cap <= 64);
	assert_true(m.used * 10 < m.cap * 7 + 10);
	for(int i = 0; i < 10; i++){
		key(buf, i);
		assert_ptr_equal(chat_hmap_get(&m, buf), V(i));
	}
	chat_hmap_free(&m);
}

static void test_binary_keys(void **state)
{
	(void)state;
	struct chat_hmap m;
	chat_hmap_init(&m);
	assert_int_equal(chat_hmap_putn(&m, "a\0b", 3, V(1), NULL), 0);
	assert_int_equal(chat_hmap_putn(&m, "a\0c", 3, V(2), NULL), 0);
	assert_int_equal(chat_hmap_putn(&m, "a", 1, V(3), NULL), 0);
	assert_int_equal(chat_hmap_putn(&m, "a\0", 2, V(4), NULL), 0);
	assert_int_equal(chat_hmap_putn(&m, "", 0, V(5), NULL), 0);
	assert_int_equal(chat_hmap_putn(&m, "\0", 1, V(6), NULL), 0);
	assert_int_equal(chat_hmap_putn(&m, "\0\0", 2, V(7), NULL), 0);
	assert_int_equal(m.n, 7);
	assert_ptr_equal(chat_hmap_getn(&m, "a\0b", 3), V(1));
	assert_ptr_equal(chat_hmap_getn(&m, "a\0c", 3), V(2));
	assert_ptr_equal(chat_hmap_getn(&m, "a", 1), V(3));
	assert_ptr_equal(chat_hmap_get(&m, "a"), V(3));
	assert_ptr_equal(chat_hmap_getn(&m, "a\0", 2), V(4));
	assert_ptr_equal(chat_hmap_getn(&m, "", 0), V(5));
	assert_ptr_equal(chat_hmap_get(&m, ""), V(5));
	assert_ptr_equal(chat_hmap_getn(&m, "\0", 1), V(6));
	assert_ptr_equal(chat_hmap_getn(&m, "\0\0", 2), V(7));
	assert_null(chat_hmap_getn(&m, "a\0d", 3));
	assert_null(chat_hmap_getn(&m, "\0\0\0", 3));
	/* binary keys with every byte value */
	unsigned char k[4];
	for(int i = 0; i < 256; i++){
		k[0] = (unsigned char)i;
		k[1] = 0;
		k[2] = (unsigned char)(255 - i);
		k[3] = 0xff;
		assert_int_equal(chat_hmap_putn(&m, k, 4, V(100 + i), NULL), 0);
	}
	for(int i = 0; i < 256; i++){
		k[0] = (unsigned char)i;
		k[1] = 0;
		k[2] = (unsigned char)(255 - i);
		k[3] = 0xff;
		assert_ptr_equal(chat_hmap_getn(&m, k, 4), V(100 + i));
	}
	/* iteration reports the real length; the copy is NUL-terminated */
	size_t it = 0, klen, found = 0;
	const char *key_out;
	void *v;
	while(chat_hmap_next(&m, &it, &key_out, &klen, &v)){
		if(v == V(1)){
			assert_int_equal(klen, 3);
			assert_memory_equal(key_out, "a\0b", 3);
			assert_int_equal(key_out[3], '\0');
			found++;
		}
	}
	assert_int_equal(found, 1);
	assert_ptr_equal(chat_hmap_deln(&m, "a\0b", 3), V(1));
	assert_ptr_equal(chat_hmap_getn(&m, "a\0c", 3), V(2));
	assert_ptr_equal(chat_hmap_getn(&m, "a", 1), V(3));
	chat_hmap_free(&m);
}

static void test_pair_key(void **state)
{
	(void)state;
	char a[2 * 65], b[2 * 65];
	size_t la = chat_pair_key(a, "alice", "bob");
	assert_int_equal(la, 9);
	assert_memory_equal(a, "alice\0bob", 9);
	size_t lb = chat_pair_key(b, "bob", "alice");
	assert_int_equal(lb, 9);
	assert_memory_not_equal(a, b, 9);
	la = chat_pair_key(a, "ab", "c");
	lb = chat_pair_key(b, "a", "bc");
	assert_int_equal(la, lb);
	assert_memory_not_equal(a, b, la);
	/* 64 + 64 characters fit the documented buffer */
	char u[65];
	memset(u, 'u', 64);
	u[64] = '\0';
	assert_int_equal(chat_pair_key(a, u, u), 129);

	struct chat_hmap m;
	chat_hmap_init(&m);
	la = chat_pair_key(a, "alice", "bob");
	assert_int_equal(chat_hmap_putn(&m, a, la, V(1), NULL), 0);
	lb = chat_pair_key(b, "bob", "alice");
	assert_null(chat_hmap_getn(&m, b, lb));
	assert_int_equal(chat_hmap_putn(&m, b, lb, V(2), NULL), 0);
	la = chat_pair_key(a, "alice", "bob");
	assert_ptr_equal(chat_hmap_getn(&m, a, la), V(1));
	la = chat_pair_key(a, "alic", "ebob");
	assert_null(chat_hmap_getn(&m, a, la));
	chat_hmap_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_100k),
		cmocka_unit_test(test_tombstone_reuse),
		cmocka_unit_test(test_binary_keys),
		cmocka_unit_test(test_pair_key),
	};
	return cmocka_run_group_tests_name("hmap", tests, NULL, NULL);
}
