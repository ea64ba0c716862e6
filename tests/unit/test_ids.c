/* SPDX-License-Identifier: EPL-2.0
 * test_ids.c: user/group/device ids ([A-Za-z0-9._-]{1,64}) and the client
 * id shapes "{user}" and "{user}:{device}" (common/ids.c). These checks
 * keep ids out of topics and SQL, so every forbidden byte class is tried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ids.h"

static void fill(char *buf, size_t n, char c)
{
	memset(buf, c, n);
	buf[n] = '\0';
}

static void test_valid_ids(void **state)
{
	(void)state;
	assert_true(chat_id_valid("a"));
	assert_true(chat_id_valid("alice"));
	assert_true(chat_id_valid("Alice.Smith_01-x"));
	assert_true(chat_id_valid("0"));
	assert_true(chat_id_valid("..."));
	assert_true(chat_id_valid("-"));
	assert_true(chat_id_valid("_"));
	assert_true(chat_id_valid("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._"));
}

static void test_empty_and_null(void **state)
{
	(void)state;
	assert_false(chat_id_valid(NULL));
	assert_false(chat_id_valid(""));
	assert_false(chat_id_validn(NULL, 0));
	assert_false(chat_id_validn(NULL, 3));
	assert_false(chat_id_validn("abc", 0));
}

static void test_length_limit(void **state)
{
	(void)state;
	char buf[200];
	fill(buf, 63, 'a');
	assert_true(chat_id_valid(buf));
	fill(buf, 64, 'a');
	assert_true(chat_id_valid(buf));
	assert_true(chat_id_validn(buf, 64));
	fill(buf, 65, 'a');
	assert_false(chat_id_valid(buf));
	assert_false(chat_id_validn(buf, 65));
	fill(buf, 150, 'z');
	assert_false(chat_id_valid(buf));
	/* counted: the first 64 bytes of a longer buffer are a valid id */
	assert_true(chat_id_validn(buf, 64));
}

static void test_every_forbidden_byte(void **state)
{
	(void)state;
	/* Every byte value outside [A-Za-z0-9._-], alone, at the start, in
	 * the middle and at the end of an otherwise valid id. */
	for(int c = 1; c < 256; c++){
		bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
			|| c == '.' || c == '_' || c == '-';
		char one[2] = {(char)c, 0};
		char start[8] = {(char)c, 'a', 'b', 0};
		char mid[8] = {'a', (char)c, 'b', 0};
		char end[8] = {'a', 'b', (char)c, 0};
		if(allowed){
			assert_true(chat_id_valid(one));
			assert_true(chat_id_valid(mid));
		}else{
			if(chat_id_valid(one) || chat_id_valid(start) || chat_id_valid(mid) || chat_id_valid(end)){
				fail_msg("byte 0x%02x accepted in an id", c);
			}
			assert_false(chat_id_validn(mid, 3));
		}
	}
}

static void test_named_forbidden_classes(void **state)
{
	(void)state;
	const char *bad[] = {
		"a/b", "/", "a+", "+", "#", "a#b", "a b", " a", "a ", ":", "alice:phone", "a\tb", "a\nb",
		"a\rb", "$SYS", "a*b", "a,b", "a;b", "a'b", "a\"b", "a\\b", "a%b", "a@b", "a=b", "a?b",
		"caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "a\x7f", "a\x01", "\xff", "a\x80",
	};
	for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++){
		if(chat_id_valid(bad[i])) fail_msg("\"%s\" accepted", bad[i]);
		if(chat_id_validn(bad[i], strlen(bad[i]))) fail_msg("\"%s\" accepted (counted)", bad[i]);
	}
}

static void test_nul_inside_counted(void **state)
{
	(void)state;
	const char s[] = {'a', 'b', '\0', 'c', 'd'};
	assert_false(chat_id_validn(s, sizeof s));
	assert_true(chat_id_validn(s, 2));
	const char lead[] = {'\0', 'a'};
	assert_false(chat_id_validn(lead, 2));
	const char trail[] = {'a', '\0'};
	assert_false(chat_id_validn(trail, 2));
}

static void test_clientid_for_user(void **state)
{
	(void)state;
	assert_true(chat_clientid_for_user("alice", "alice"));
	assert_true(chat_clientid_for_user("alice:phone", "alice"));
	assert_true(chat_clientid_for_user("alice:Phone.2_x-y", "alice"));
	assert_false(chat_clientid_for_user("alice:", "alice"));
	assert_false(chat_clientid_for_user("alice:a:b", "alice"));
	assert_false(chat_clientid_for_user("bob", "alice"));
	assert_false(chat_clientid_for_user("bob:phone", "alice"));
	assert_false(chat_clientid_for_user("alice:x/y", "alice"));
	assert_false(chat_clientid_for_user("alice:x+y", "alice"));
	assert_false(chat_clientid_for_user("alice:#", "alice"));
	assert_false(chat_clientid_for_user("alice:x y", "alice"));
	assert_false(chat_clientid_for_user("alicex", "alice"));
	assert_false(chat_clientid_for_user("alicex:phone", "alice"));
	assert_false(chat_clientid_for_user("alic", "alice"));
	assert_false(chat_clientid_for_user("ALICE", "alice"));
	assert_false(chat_clientid_for_user("", "alice"));
	assert_false(chat_clientid_for_user(":phone", "alice"));
	assert_false(chat_clientid_for_user(NULL, "alice"));
	assert_false(chat_clientid_for_user("alice", NULL));
	/* device part: 1..64 characters */
	char cid[200], dev[80];
	fill(dev, 64, 'd');
	snprintf(cid, sizeof cid, "alice:%s", dev);
	assert_true(chat_clientid_for_user(cid, "alice"));
	fill(dev, 65, 'd');
	snprintf(cid, sizeof cid, "alice:%s", dev);
	assert_false(chat_clientid_for_user(cid, "alice"));
}

static void test_clientid_user(void **state)
{
	(void)state;
	char out[CHAT_ID_MAX + 1];
	assert_true(chat_clientid_user("alice", out));
	assert_string_equal(out, "alice");
	assert_true(chat_clientid_user("alice:phone", out));
	assert_string_equal(out, "alice");
	assert_false(chat_clientid_user("alice:", out));
	assert_false(chat_clientid_user("alice:a:b", out));
	assert_false(chat_clientid_user("alice:x/y", out));
	assert_false(chat_clientid_user(":phone", out));
	assert_false(chat_clientid_user("", out));
	assert_false(chat_clientid_user("a b", out));
	assert_false(chat_clientid_user("mosq-123/x", out));
	assert_false(chat_clientid_user(NULL, out));
	char cid[200], u[80];
	fill(u, 64, 'u');
	snprintf(cid, sizeof cid, "%s:d", u);
	assert_true(chat_clientid_user(cid, out));
	assert_string_equal(out, u);
	fill(u, 65, 'u');
	snprintf(cid, sizeof cid, "%s:d", u);
	assert_false(chat_clientid_user(cid, out));
	assert_false(chat_clientid_user(u, out));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_ids),
		cmocka_unit_test(test_empty_and_null),
		cmocka_unit_test(test_length_limit),
		cmocka_unit_test(test_every_forbidden_byte),
		cmocka_unit_test(test_named_forbidden_classes),
		cmocka_unit_test(test_nul_inside_counted),
		cmocka_unit_test(test_clientid_for_user),
		cmocka_unit_test(test_clientid_user),
	};
	return cmocka_run_group_tests_name("ids", tests, NULL, NULL);
}
