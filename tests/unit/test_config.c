/* SPDX-License-Identifier: EPL-2.0
 * test_config.c: plugin_opt_* -> struct chat_config (plugin/config.c):
 * defaults, required options, unknown options, numeric ranges, the
 * outside_prefix word, topic prefix shapes and wakeup forms. Bad config
 * must fail loudly (with a reason naming the option), never run half-set.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "chat.h"

#define MAXOPTS 32

struct opts {
	struct mosquitto_opt o[MAXOPTS];
	int n;
};

static void base(struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->o[o->n++] = (struct mosquitto_opt){(char *)"db_conninfo", (char *)"host=/run/postgresql dbname=chat"};
	o->o[o->n++] = (struct mosquitto_opt){(char *)"token_secret_file", (char *)"/etc/mosquitto/chat.secret"};
}

static void add(struct opts *o, const char *k, const char *v)
{
	assert_true(o->n < MAXOPTS);
	o->o[o->n++] = (struct mosquitto_opt){(char *)k, (char *)v};
}

static int parse(struct opts *o, struct chat_config *cfg, char *err, size_t errlen)
{
	err[0] = '\0';
	return chat_config__parse(cfg, o->o, o->n, err, errlen);
}

/* Parse base + one option, expecting failure with the option named in err. */
static void expect_refused(const char *key, const char *value, const char *in_err)
{
	struct opts o;
	struct chat_config cfg;
	char err[512];
	base(&o);
	add(&o, key, value);
	int rc = parse(&o, &cfg, err, sizeof err);
	if(rc != -1){
		chat_config__free(&cfg);
		fail_msg("plugin_opt_%s \"%s\" accepted", key, value ? value : "(null)");
	}
	if(!strstr(err, in_err)) fail_msg("plugin_opt_%s \"%s\": error \"%s\" does not mention \"%s\"", key,
			value ? value : "(null)", err, in_err);
	/* nothing left allocated, nothing half-set */
	assert_null(cfg.db_conninfo);
	assert_null(cfg.prefix);
	assert_null(cfg.wakeup);
}

static void expect_accepted(const char *key, const char *value, struct chat_config *cfg)
{
	struct opts o;
	char err[512];
	base(&o);
	add(&o, key, value);
	if(parse(&o, cfg, err, sizeof err) != 0) fail_msg("plugin_opt_%s \"%s\" refused: %s", key, value, err);
}

static void test_defaults(void **state)
{
	(void)state;
	struct opts o;
	struct chat_config cfg;
	char err[512];
	base(&o);
	assert_int_equal(parse(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.db_conninfo, "host=/run/postgresql dbname=chat");
	assert_string_equal(cfg.token_secret_file, "/etc/mosquitto/chat.secret");
	assert_string_equal(cfg.spool_dir, "/var/lib/mosquitto/chat-spool");
	assert_string_equal(cfg.prefix, "chat");
	assert_int_equal(cfg.prefix_len, 4);
	assert_true(cfg.outside_allow);
	assert_int_equal(cfg.max_payload, 65536);
	assert_int_equal(cfg.debounce_ms, 3000);
	assert_int_equal(cfg.node_id, 0);
	assert_int_equal(cfg.batch_max, 256);
	assert_int_equal(cfg.queue_max, 100000);
	assert_int_equal(cfg.typing_per_s, 5);
	assert_int_equal(cfg.refresh_s, 30);
	assert_int_equal(cfg.stats_s, 10);
	assert_string_equal(cfg.wakeup, "auto");
	chat_config__free(&cfg);
	assert_null(cfg.prefix);
	chat_config__free(&cfg); /* twice is harmless */
}

static void test_all_set(void **state)
{
	(void)state;
	struct opts o;
	struct chat_config cfg;
	char err[512];
	base(&o);
	add(&o, "spool_dir", "/tmp/spool");
	add(&o, "topic_prefix", "app/chat");
	add(&o, "outside_prefix", "deny");
	add(&o, "max_payload", "1024");
	add(&o, "presence_debounce_ms", "0");
	add(&o, "node_id", "15");
	add(&o, "batch_max", "1");
	add(&o, "queue_max", "10");
	add(&o, "typing_per_s", "1000");
	add(&o, "refresh_s", "86400");
	add(&o, "stats_s", "1");
	add(&o, "wakeup", "off");
	assert_int_equal(parse(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.spool_dir, "/tmp/spool");
	assert_string_equal(cfg.prefix, "app/chat");
	assert_int_equal(cfg.prefix_len, 8);
	assert_false(cfg.outside_allow);
	assert_int_equal(cfg.max_payload, 1024);
	assert_int_equal(cfg.debounce_ms, 0);
	assert_int_equal(cfg.node_id, 15);
	assert_int_equal(cfg.batch_max, 1);
	assert_int_equal(cfg.queue_max, 10);
	assert_int_equal(cfg.typing_per_s, 1000);
	assert_int_equal(cfg.refresh_s, 86400);
	assert_int_equal(cfg.stats_s, 1);
	assert_string_equal(cfg.wakeup, "off");
	chat_config__free(&cfg);
}

static void test_required(void **state)
{
	(void)state;
	struct opts o;
	struct chat_config cfg;
	char err[512];

	memset(&o, 0, sizeof o);
	assert_int_equal(parse(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "db_conninfo"));
	assert_int_equal(chat_config__parse(&cfg, NULL, 0, err, sizeof err), -1);

	memset(&o, 0, sizeof o);
	add(&o, "token_secret_file", "/s");
	assert_int_equal(parse(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "db_conninfo"));
	assert_non_null(strstr(err, "required"));

	memset(&o, 0, sizeof o);
	add(&o, "db_conninfo", "dbname=chat");
	add(&o, "spool_dir", "/x");
	assert_int_equal(parse(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "token_secret_file"));
	assert_null(cfg.spool_dir); /* freed on failure */

	/* empty or valueless required options */
	expect_refused("db_conninfo", "", "db_conninfo");
	expect_refused("token_secret_file", "", "token_secret_file");
	expect_refused("db_conninfo", NULL, "db_conninfo");
	expect_refused("spool_dir", "", "spool_dir");
	expect_refused("topic_prefix", "", "topic_prefix");
	expect_refused("wakeup", "", "wakeup");
}

static void test_unknown(void **state)
{
	(void)state;
	expect_refused("bogus", "1", "bogus");
	expect_refused("DB_CONNINFO", "x", "DB_CONNINFO");
	expect_refused("max_payload ", "100", "max_payload");
	expect_refused("", "1", "unknown");
	expect_refused("plugin_opt_db_conninfo", "x", "plugin_opt_db_conninfo");
}

static void test_numbers(void **state)
{
	(void)state;
	struct chat_config cfg;
	/* boundaries accepted */
	expect_accepted("max_payload", "16", &cfg);
	assert_int_equal(cfg.max_payload, 16);
	chat_config__free(&cfg);
	expect_accepted("max_payload", "16777216", &cfg);
	assert_int_equal(cfg.max_payload, 16777216);
	chat_config__free(&cfg);
	expect_accepted("presence_debounce_ms", "600000", &cfg);
	assert_int_equal(cfg.debounce_ms, 600000);
	chat_config__free(&cfg);
	expect_accepted("queue_max", "10000000", &cfg);
	assert_int_equal(cfg.queue_max, 10000000);
	chat_config__free(&cfg);
	expect_accepted("batch_max", "10000", &cfg);
	chat_config__free(&cfg);
	/* out of range */
	expect_refused("max_payload", "15", "max_payload");
	expect_refused("max_payload", "0", "max_payload");
	expect_refused("max_payload", "16777217", "max_payload");
	expect_refused("presence_debounce_ms", "600001", "presence_debounce_ms");
	expect_refused("node_id", "16", "node_id");
	expect_refused("batch_max", "0", "batch_max");
	expect_refused("batch_max", "10001", "batch_max");
	expect_refused("queue_max", "9", "queue_max");
	expect_refused("typing_per_s", "0", "typing_per_s");
	expect_refused("refresh_s", "86401", "refresh_s");
	expect_refused("stats_s", "0", "stats_s");
	/* wrap-around and overflow */
	expect_refused("max_payload", "4294967296", "max_payload");
	expect_refused("max_payload", "4294967312", "max_payload"); /* 2^32 + 16 */
	expect_refused("max_payload", "18446744073709551616", "max_payload");
	expect_refused("max_payload", "99999999999999999999999", "max_payload");
	/* negative */
	expect_refused("max_payload", "-1", "max_payload");
	expect_refused("node_id", "-0", "node_id");
	expect_refused("presence_debounce_ms", "-3000", "presence_debounce_ms");
	expect_refused("max_payload", "-18446744073709551000", "max_payload");
	/* not numbers */
	expect_refused("max_payload", "abc", "max_payload");
	expect_refused("max_payload", "12abc", "max_payload");
	expect_refused("max_payload", "64k", "max_payload");
	expect_refused("max_payload", "1.5", "max_payload");
	expect_refused("max_payload", "1e5", "max_payload");
	expect_refused("max_payload", "0x100", "max_payload");
	expect_refused("max_payload", "", "max_payload");
	expect_refused("max_payload", NULL, "max_payload");
	expect_refused("max_payload", "100 ", "max_payload");
	expect_refused("node_id", "one", "node_id");
}

static void test_outside_prefix(void **state)
{
	(void)state;
	struct chat_config cfg;
	expect_accepted("outside_prefix", "allow", &cfg);
	assert_true(cfg.outside_allow);
	chat_config__free(&cfg);
	expect_accepted("outside_prefix", "deny", &cfg);
	assert_false(cfg.outside_allow);
	chat_config__free(&cfg);
	const char *bad[] = {"", "yes", "no", "true", "false", "1", "0", "Allow", "DENY", "allow ", " deny", "denied"};
	for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_refused("outside_prefix", bad[i], "outside_prefix");
	expect_refused("outside_prefix", NULL, "outside_prefix");
}

static void test_prefix(void **state)
{
	(void)state;
	struct chat_config cfg;
	const char *good[] = {"chat", "app/chat", "a/b/c/d", "x", "my-app_1.chat", "caf\xc3\xa9", "a b"};
	for(size_t i = 0; i < sizeof good / sizeof good[0]; i++){
		expect_accepted("topic_prefix", good[i], &cfg);
		assert_string_equal(cfg.prefix, good[i]);
		assert_int_equal(cfg.prefix_len, strlen(good[i]));
		chat_config__free(&cfg);
	}
	const char *bad[] = {
		"chat/#", "chat/+", "#", "+", "chat/+/x", "ch+at", "ch#at",
		"$chat", "$SYS", "$SYS/chat",
		"a//b", "//", "/chat", "chat/", "/", "chat//",
		"caf\xe9", "\xc0\x80",
	};
	for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_refused("topic_prefix", bad[i], "topic_prefix");
	/* length: 200 accepted, 201 refused */
	char longp[202];
	memset(longp, 'p', 200);
	longp[200] = '\0';
	expect_accepted("topic_prefix", longp, &cfg);
	chat_config__free(&cfg);
	longp[200] = 'p';
	longp[201] = '\0';
	expect_refused("topic_prefix", longp, "topic_prefix");
}

static void test_wakeup(void **state)
{
	(void)state;
	struct chat_config cfg;
	const char *good[] = {"auto", "off", "127.0.0.1:1883", "localhost:1", "broker.example.com:65535", "[::1]:1883"};
	for(size_t i = 0; i < sizeof good / sizeof good[0]; i++){
		expect_accepted("wakeup", good[i], &cfg);
		assert_string_equal(cfg.wakeup, good[i]);
		chat_config__free(&cfg);
	}
	const char *bad[] = {"localhost", "on", "AUTO", ":1883", "host:", "host:0", "host:65536", "host:abc",
		"host:1883x", "host:-1", "host:99999999999999999999"};
	for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) expect_refused("wakeup", bad[i], "wakeup");
}

static void test_repeated_option(void **state)
{
	(void)state;
	struct opts o;
	struct chat_config cfg;
	char err[512];
	base(&o);
	add(&o, "db_conninfo", "dbname=second");
	add(&o, "max_payload", "100");
	add(&o, "max_payload", "200");
	add(&o, "topic_prefix", "one");
	add(&o, "topic_prefix", "two/levels");
	assert_int_equal(parse(&o, &cfg, err, sizeof err), 0);
	assert_string_equal(cfg.db_conninfo, "dbname=second");
	assert_int_equal(cfg.max_payload, 200);
	assert_string_equal(cfg.prefix, "two/levels");
	assert_int_equal(cfg.prefix_len, 10);
	chat_config__free(&cfg); /* ASan: the replaced strings were freed */
	/* a failure late in the list frees what was set before */
	base(&o);
	add(&o, "spool_dir", "/a");
	add(&o, "topic_prefix", "x/y");
	add(&o, "wakeup", "nonsense");
	assert_int_equal(parse(&o, &cfg, err, sizeof err), -1);
	assert_non_null(strstr(err, "wakeup"));
	assert_null(cfg.spool_dir);
}

static void test_small_err_buffer(void **state)
{
	(void)state;
	struct opts o;
	struct chat_config cfg;
	char err[8];
	memset(&o, 0, sizeof o);
	add(&o, "bogus_option_with_a_long_name", "x");
	assert_int_equal(chat_config__parse(&cfg, o.o, o.n, err, sizeof err), -1);
	assert_int_equal(strlen(err), sizeof err - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_set),
		cmocka_unit_test(test_required),
		cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_outside_prefix),
		cmocka_unit_test(test_prefix),
		cmocka_unit_test(test_wakeup),
		cmocka_unit_test(test_repeated_option),
		cmocka_unit_test(test_small_err_buffer),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
