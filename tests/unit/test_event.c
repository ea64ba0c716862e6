/* SPDX-License-Identifier: EPL-2.0
 * test_event.c: the wire shapes (common/event.c): parsing sends and
 * receipts as clients publish them, and rendering inbox events, errors,
 * typing and presence byte for byte (field order is part of the contract:
 * chat-rest must return exactly what was published).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

/* ---- chat_send_parse ------------------------------------------------------- */

struct parsed {
	enum chat_err rc;
	struct chat_send s;
	char *cid_out;
	const char *reason;
};

static void parse(struct parsed *p, const void *payload, size_t len)
{
	memset(p, 0, sizeof *p);
	p->cid_out = (char *)"poison";
	p->reason = NULL;
	p->rc = chat_send_parse(payload, len, &p->s, &p->cid_out, &p->reason);
	if(p->rc != CHAT_OK) assert_non_null(p->reason);
}

static void parse_str(struct parsed *p, const char *payload)
{
	parse(p, payload, strlen(payload));
}

static void done(struct parsed *p)
{
	chat_send_free(&p->s);
	free(p->cid_out);
	p->cid_out = NULL;
}

static void expect_ok(const char *payload, const char *cid, const char *body, const char *meta)
{
	struct parsed p;
	parse_str(&p, payload);
	if(p.rc != CHAT_OK) fail_msg("payload %s: rc %d (%s)", payload, p.rc, p.reason);
	if(cid) assert_string_equal(p.s.cid, cid);
	else assert_null(p.s.cid);
	assert_string_equal(p.s.body, body);
	if(meta) assert_string_equal(p.s.meta, meta);
	else assert_null(p.s.meta);
	done(&p);
}

/* cid_echo: the cid expected in *cid_out, or NULL */
static void expect_bad(const void *payload, size_t len, const char *cid_echo)
{
	struct parsed p;
	parse(&p, payload, len);
	if(p.rc != CHAT_E_BAD_PAYLOAD) fail_msg("payload %.*s: rc %d, want bad_payload", (int)len, (const char *)payload, p.rc);
	assert_null(p.s.body);
	assert_null(p.s.cid);
	assert_null(p.s.meta);
	if(cid_echo) assert_string_equal(p.cid_out, cid_echo);
	else assert_null(p.cid_out);
	done(&p);
}

static void expect_bad_str(const char *payload, const char *cid_echo)
{
	expect_bad(payload, strlen(payload), cid_echo);
}

static void test_send_plain_text(void **state)
{
	(void)state;
	expect_ok("hello", NULL, "hello", NULL);
	expect_ok("hello world, how are you?", NULL, "hello world, how are you?", NULL);
	expect_ok("caf\xc3\xa9 \xf0\x9f\x98\x80", NULL, "caf\xc3\xa9 \xf0\x9f\x98\x80", NULL);
	/* looks like JSON but is not: still text */
	expect_ok("{not json", NULL, "{not json", NULL);
	expect_ok("{\"body\":\"x\"} and more", NULL, "{\"body\":\"x\"} and more", NULL);
	expect_ok("[1, 2", NULL, "[1, 2", NULL);
	/* a large text body */
	size_t n = 60000;
	char *big = malloc(n + 1);
	assert_non_null(big);
	for(size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
	big[n] = '\0';
	expect_ok(big, NULL, big, NULL);
	free(big);
}

static void test_send_json(void **state)
{
	(void)state;
	expect_ok("{\"cid\":\"c1\",\"body\":\"hi\"}", "c1", "hi", NULL);
	expect_ok("{\"body\":\"hi\"}", NULL, "hi", NULL);
	expect_ok("{\"body\":\"\"}", NULL, "", NULL);
	expect_ok("  {\"body\" : \"hi\", \"cid\" : \"c-2\"}  \n", "c-2", "hi", NULL);
	expect_ok("{\"cid\":\"c1\",\"body\":\"hi\",\"meta\":{\"b\":1,\"a\":[1,2],\"c\":{\"d\":null}}}", "c1", "hi",
			"{\"b\":1,\"a\":[1,2],\"c\":{\"d\":null}}");
	expect_ok("{\"body\":\"hi\",\"meta\":{}}", NULL, "hi", "{}");
	expect_ok("{\"body\":\"hi\",\"meta\":null}", NULL, "hi", NULL);
	expect_ok("{\"body\":\"hi\",\"unknown\":[1,{\"x\":2}]}", NULL, "hi", NULL);
	/* escapes are decoded */
	expect_ok("{\"body\":\"l1\\nl2 \\\"q\\\" \\u00e9 \\ud83d\\ude00 \\/\"}", NULL,
			"l1\nl2 \"q\" \xc3\xa9 \xf0\x9f\x98\x80 /", NULL);
	/* cid: 1 and 64 characters */
	char buf[300], cid[70];
	memset(cid, 'c', 64);
	cid[64] = '\0';
	snprintf(buf, sizeof buf, "{\"cid\":\"%s\",\"body\":\"x\"}", cid);
	expect_ok(buf, cid, "x", NULL);
	expect_ok("{\"cid\":\"1\",\"body\":\"x\"}", "1", "x", NULL);
	/* cid_out may be NULL */
	struct chat_send s;
	const char *reason = NULL;
	const char *ok = "{\"cid\":\"c\",\"body\":\"b\"}", *bad = "{\"cid\":\"c\",\"body\":5}";
	assert_int_equal(chat_send_parse(ok, strlen(ok), &s, NULL, &reason), CHAT_OK);
	assert_string_equal(s.cid, "c");
	chat_send_free(&s);
	assert_int_equal(chat_send_parse(bad, strlen(bad), &s, NULL, &reason), CHAT_E_BAD_PAYLOAD);
	chat_send_free(&s);
}

static void test_send_bad_shapes(void **state)
{
	(void)state;
	/* JSON, but not an object */
	expect_bad_str("[1,2]", NULL);
	expect_bad_str("[]", NULL);
	expect_bad_str("42", NULL);
	expect_bad_str("-1.5e3", NULL);
	expect_bad_str("\"hello\"", NULL);
	expect_bad_str("true", NULL);
	expect_bad_str("null", NULL);
	expect_bad_str("[{\"body\":\"x\"}]", NULL);
	/* body missing or not a string; cid echoed when readable */
	expect_bad_str("{}", NULL);
	expect_bad_str("{\"cid\":\"c1\"}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"body\":5}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"body\":null}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"body\":{\"t\":\"x\"}}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"body\":[\"x\"]}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"Body\":\"x\"}", "c1");
	/* meta not an object */
	expect_bad_str("{\"cid\":\"c1\",\"body\":\"x\",\"meta\":[1]}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"body\":\"x\",\"meta\":\"m\"}", "c1");
	expect_bad_str("{\"cid\":\"c1\",\"body\":\"x\",\"meta\":3}", "c1");
	expect_bad_str("{\"body\":\"x\",\"meta\":false}", NULL);
	/* cid: wrong type, empty, 65 characters: not echoed */
	expect_bad_str("{\"cid\":7,\"body\":\"x\"}", NULL);
	expect_bad_str("{\"cid\":null,\"body\":\"x\"}", NULL);
	expect_bad_str("{\"cid\":\"\",\"body\":\"x\"}", NULL);
	char buf[300], cid[70];
	memset(cid, 'c', 65);
	cid[65] = '\0';
	snprintf(buf, sizeof buf, "{\"cid\":\"%s\",\"body\":\"x\"}", cid);
	expect_bad_str(buf, NULL);
}

static void test_send_empty_and_utf8(void **state)
{
	(void)state;
	expect_bad("", 0, NULL);
	expect_bad("x", 0, NULL);
	struct parsed p;
	memset(&p, 0, sizeof p);
	p.rc = chat_send_parse(NULL, 5, &p.s, &p.cid_out, &p.reason);
	assert_int_equal(p.rc, CHAT_E_BAD_PAYLOAD);
	done(&p);
	/* invalid UTF-8, as text and inside JSON strings */
	expect_bad_str("caf\xe9", NULL);
	expect_bad_str("\xc0\x80", NULL);
	expect_bad_str("\xed\xa0\x80", NULL);
	expect_bad_str("{\"cid\":\"c1\",\"body\":\"\xff\"}", NULL);
	expect_bad_str("{\"cid\":\"c1\",\"body\":\"ok\",\"meta\":{\"k\":\"\xf4\x90\x80\x80\"}}", NULL);
	/* a NUL byte in the payload */
	expect_bad("hi\0there", 8, NULL);
	static const char jnul[] = "{\"body\":\"x\"}\0";
	expect_bad(jnul, sizeof jnul - 1, NULL);
}

/* BUG: jansson refuses some valid JSON (duplicate keys under
 * JSON_REJECT_DUPLICATES, "\u0000" without JSON_ALLOW_NUL), and
 * chat_send_parse then treats the payload as "not JSON" and stores the raw
 * JSON text as the message body. The contract: valid JSON that is not an
 * object with a string body is bad_payload; these must not become text. */
static void test_send_json_refused_by_parser_is_bad_payload(void **state)
{
	(void)state;
	const char *cases[] = {
		"{\"body\":\"a\",\"body\":\"b\"}",
		"{\"cid\":\"x\",\"cid\":\"y\",\"body\":\"b\"}",
		"{\"body\":\"a\",\"meta\":{\"k\":1,\"k\":2}}",
		"{\"body\":\"a\\u0000b\"}",
	};
	int wrong = 0;
	for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++){
		struct parsed p;
		parse_str(&p, cases[i]);
		if(p.rc != CHAT_E_BAD_PAYLOAD){
			print_error("payload %s: rc %d, body \"%s\"; want bad_payload\n", cases[i], p.rc,
					p.s.body ? p.s.body : "(null)");
			wrong++;
		}
		done(&p);
	}
	if(wrong) fail_msg("%d valid-JSON payload(s) taken as plain text", wrong);
}

/* ---- chat_receipt_parse --------------------------------------------------- */

static enum chat_err receipt(const char *s, struct chat_receipt_in *r)
{
	const char *reason = NULL;
	enum chat_err rc = chat_receipt_parse(s, strlen(s), r, &reason);
	if(rc != CHAT_OK) assert_non_null(reason);
	return rc;
}

static void test_receipt_good(void **state)
{
	(void)state;
	struct chat_receipt_in *r = malloc(sizeof *r);
	assert_non_null(r);
	assert_int_equal(receipt("{\"status\":\"read\",\"ids\":[\"1\",\"22\",\"9223372036854775807\"]}", r), CHAT_OK);
	assert_true(r->read);
	assert_int_equal(r->n, 3);
	assert_int_equal(r->ids[0], 1);
	assert_int_equal(r->ids[1], 22);
	assert_int_equal(r->ids[2], INT64_MAX);
	assert_int_equal(receipt("{\"ids\":[\"5\"],\"status\":\"delivered\",\"extra\":1}", r), CHAT_OK);
	assert_false(r->read);
	assert_int_equal(r->n, 1);
	assert_int_equal(r->ids[0], 5);
	/* exactly 256 ids */
	char *buf = malloc(256 * 12 + 64);
	assert_non_null(buf);
	size_t o = (size_t)sprintf(buf, "{\"status\":\"read\",\"ids\":[");
	for(int i = 1; i <= 256; i++) o += (size_t)sprintf(buf + o, "%s\"%d\"", i > 1 ? "," : "", i * 1000);
	sprintf(buf + o, "]}");
	assert_int_equal(receipt(buf, r), CHAT_OK);
	assert_int_equal(r->n, 256);
	assert_int_equal(r->ids[255], 256000);
	/* 257 ids */
	o = (size_t)sprintf(buf, "{\"status\":\"read\",\"ids\":[");
	for(int i = 1; i <= 257; i++) o += (size_t)sprintf(buf + o, "%s\"%d\"", i > 1 ? "," : "", i);
	sprintf(buf + o, "]}");
	assert_int_equal(receipt(buf, r), CHAT_E_BAD_PAYLOAD);
	free(buf);
	free(r);
}

static void test_receipt_bad(void **state)
{
	(void)state;
	struct chat_receipt_in *r = malloc(sizeof *r);
	assert_non_null(r);
	const char *bad[] = {
		"",
		"read",
		"[]",
		"\"read\"",
		"{}",
		"{\"status\":\"seen\",\"ids\":[\"1\"]}",
		"{\"status\":\"READ\",\"ids\":[\"1\"]}",
		"{\"status\":\"\",\"ids\":[\"1\"]}",
		"{\"status\":1,\"ids\":[\"1\"]}",
		"{\"ids\":[\"1\"]}",
		"{\"status\":\"read\"}",
		"{\"status\":\"read\",\"ids\":[]}",
		"{\"status\":\"read\",\"ids\":\"1\"}",
		"{\"status\":\"read\",\"ids\":{\"1\":1}}",
		"{\"status\":\"read\",\"ids\":[1]}",
		"{\"status\":\"read\",\"ids\":[\"1\",2]}",
		"{\"status\":\"read\",\"ids\":[null]}",
		"{\"status\":\"read\",\"ids\":[[\"1\"]]}",
		"{\"status\":\"read\",\"ids\":[\"\"]}",
		"{\"status\":\"read\",\"ids\":[\"abc\"]}",
		"{\"status\":\"read\",\"ids\":[\"12a\"]}",
		"{\"status\":\"read\",\"ids\":[\"1.5\"]}",
		"{\"status\":\"read\",\"ids\":[\"1e3\"]}",
		"{\"status\":\"read\",\"ids\":[\"0x10\"]}",
		"{\"status\":\"read\",\"ids\":[\"0\"]}",
		"{\"status\":\"read\",\"ids\":[\"-1\"]}",
		"{\"status\":\"read\",\"ids\":[\"9223372036854775808\"]}",
		"{\"status\":\"read\",\"ids\":[\"99999999999999999999\"]}",
		"{\"status\":\"read\",\"ids\":[\"12 \"]}",
		"{\"status\":\"read\",\"status\":\"read\",\"ids\":[\"1\"]}",
		"{\"status\":\"read\",\"ids\":[\"1\"]",
		"{\"status\":\"read\",\"ids\":[\"\xff\"]}",
	};
	for(size_t i = 0; i < sizeof bad / sizeof bad[0]; i++){
		if(receipt(bad[i], r) != CHAT_E_BAD_PAYLOAD) fail_msg("receipt %s accepted", bad[i]);
	}
	const char *reason = NULL;
	assert_int_equal(chat_receipt_parse(NULL, 0, r, &reason), CHAT_E_BAD_PAYLOAD);
	static const char withnul[] = "{\"status\":\"read\",\"ids\":[\"1\"]}\0";
	assert_int_equal(chat_receipt_parse(withnul, sizeof withnul - 1, r, &reason), CHAT_E_BAD_PAYLOAD);
	assert_int_equal(chat_receipt_parse(withnul, sizeof withnul - 2, r, &reason), CHAT_OK);
	free(r);
}

/* BUG (minor): receipt ids are "decimal strings", but strtoll() accepts
 * leading white space and a sign, so " 12", "+12" and "\n12" are taken as
 * message id 12. */
static void test_receipt_ids_strictly_decimal(void **state)
{
	(void)state;
	struct chat_receipt_in *r = malloc(sizeof *r);
	assert_non_null(r);
	const char *cases[] = {
		"{\"status\":\"read\",\"ids\":[\" 12\"]}",
		"{\"status\":\"read\",\"ids\":[\"+12\"]}",
		"{\"status\":\"read\",\"ids\":[\"\\n12\"]}",
	};
	int wrong = 0;
	for(size_t i = 0; i < sizeof cases / sizeof cases[0]; i++){
		if(receipt(cases[i], r) != CHAT_E_BAD_PAYLOAD){
			print_error("receipt %s accepted (id %lld)\n", cases[i], (long long)r->ids[0]);
			wrong++;
		}
	}
	free(r);
	if(wrong) fail_msg("%d receipt(s) with non-decimal ids accepted", wrong);
}

/* ---- rendering --------------------------------------------------------------- */

static void expect_render(char *got, const char *want)
{
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_render_dm(void **state)
{
	(void)state;
	struct chat_event ev = {
		.kind = CHAT_EV_MSG, .seq = 7, .ts = 1700000000123LL, .id = 123456789012345LL,
		.from = "alice", .to = "bob", .cid = "c1", .body = "hi \"bob\"\n\xe2\x82\xac/",
		.meta = "{\"k\":1,\"a\":[true,null]}",
	};
	expect_render(chat_event_render(&ev),
			"{\"type\":\"msg\",\"id\":\"123456789012345\",\"seq\":7,\"ts\":1700000000123,\"from\":\"alice\","
			"\"to\":\"bob\",\"cid\":\"c1\",\"body\":\"hi \\\"bob\\\"\\n\xe2\x82\xac/\",\"meta\":{\"k\":1,\"a\":[true,null]}}");
	/* the recipient's copy: no cid, no meta */
	ev.cid = NULL;
	ev.meta = NULL;
	ev.body = "hi";
	expect_render(chat_event_render(&ev),
			"{\"type\":\"msg\",\"id\":\"123456789012345\",\"seq\":7,\"ts\":1700000000123,\"from\":\"alice\","
			"\"to\":\"bob\",\"body\":\"hi\"}");
	/* NULL body renders as an empty string */
	ev.body = NULL;
	ev.id = 1;
	ev.seq = 1;
	ev.ts = 0;
	expect_render(chat_event_render(&ev),
			"{\"type\":\"msg\",\"id\":\"1\",\"seq\":1,\"ts\":0,\"from\":\"alice\",\"to\":\"bob\",\"body\":\"\"}");
	/* the id is a string even at the int64 limit */
	ev.id = INT64_MAX;
	ev.seq = INT64_MAX;
	char *s = chat_event_render(&ev);
	assert_non_null(strstr(s, "\"id\":\"9223372036854775807\",\"seq\":9223372036854775807,"));
	free(s);
}

static void test_render_group_msg(void **state)
{
	(void)state;
	struct chat_event ev = {
		.kind = CHAT_EV_MSG, .seq = 3, .ts = 10, .id = 5, .from = "alice", .to = "ignored",
		.group = "team", .gseq = 2, .cid = "c9", .body = "yo", .meta = "{}",
	};
	expect_render(chat_event_render(&ev),
			"{\"type\":\"msg\",\"id\":\"5\",\"seq\":3,\"ts\":10,\"from\":\"alice\",\"group\":\"team\",\"gseq\":2,"
			"\"cid\":\"c9\",\"body\":\"yo\",\"meta\":{}}");
	ev.cid = NULL;
	ev.meta = NULL;
	expect_render(chat_event_render(&ev),
			"{\"type\":\"msg\",\"id\":\"5\",\"seq\":3,\"ts\":10,\"from\":\"alice\",\"group\":\"team\",\"gseq\":2,"
			"\"body\":\"yo\"}");
}

static void test_render_receipt(void **state)
{
	(void)state;
	const char *ids[] = {"1", "22", "333"};
	struct chat_event ev = {
		.kind = CHAT_EV_RECEIPT, .seq = 4, .ts = 10, .from = "bob", .read = true, .ids = ids, .nids = 3,
	};
	expect_render(chat_event_render(&ev),
			"{\"type\":\"receipt\",\"seq\":4,\"ts\":10,\"from\":\"bob\",\"status\":\"read\",\"ids\":[\"1\",\"22\",\"333\"]}");
	ev.read = false;
	ev.nids = 1;
	expect_render(chat_event_render(&ev),
			"{\"type\":\"receipt\",\"seq\":4,\"ts\":10,\"from\":\"bob\",\"status\":\"delivered\",\"ids\":[\"1\"]}");
	ev.nids = 0;
	expect_render(chat_event_render(&ev),
			"{\"type\":\"receipt\",\"seq\":4,\"ts\":10,\"from\":\"bob\",\"status\":\"delivered\",\"ids\":[]}");
}

static void test_render_group_event(void **state)
{
	(void)state;
	struct chat_event ev = {
		.kind = CHAT_EV_GROUP, .seq = 1, .ts = 10, .group = "team", .gevent = "created", .guser = "alice",
		.gby = NULL,
	};
	expect_render(chat_event_render(&ev),
			"{\"type\":\"group\",\"seq\":1,\"ts\":10,\"group\":\"team\",\"event\":\"created\",\"user\":\"alice\",\"by\":null}");
	ev.gevent = "added";
	ev.guser = "bob";
	ev.gby = "alice";
	ev.seq = 2;
	expect_render(chat_event_render(&ev),
			"{\"type\":\"group\",\"seq\":2,\"ts\":10,\"group\":\"team\",\"event\":\"added\",\"user\":\"bob\",\"by\":\"alice\"}");
	ev.gevent = "removed";
	expect_render(chat_event_render(&ev),
			"{\"type\":\"group\",\"seq\":2,\"ts\":10,\"group\":\"team\",\"event\":\"removed\",\"user\":\"bob\",\"by\":\"alice\"}");
}

static void test_render_error(void **state)
{
	(void)state;
	expect_render(chat_error_render(CHAT_E_BAD_PAYLOAD, "c1", "JSON payload must have a string \"body\""),
			"{\"type\":\"error\",\"cid\":\"c1\",\"code\":\"bad_payload\",\"reason\":\"JSON payload must have a string \\\"body\\\"\"}");
	expect_render(chat_error_render(CHAT_E_TOO_LARGE, NULL, "too big"),
			"{\"type\":\"error\",\"code\":\"too_large\",\"reason\":\"too big\"}");
	expect_render(chat_error_render(CHAT_E_NOT_MEMBER, NULL, NULL),
			"{\"type\":\"error\",\"code\":\"not_member\",\"reason\":\"not_member\"}");
	static const char *codes[] = {"ok", "bad_payload", "too_large", "unknown_recipient", "not_member", "blocked",
		"rate_limited", "unavailable"};
	for(int e = CHAT_OK; e <= CHAT_E_UNAVAILABLE; e++) assert_string_equal(chat_err_code((enum chat_err)e), codes[e]);
	assert_string_equal(chat_err_code((enum chat_err)99), "unavailable");
	assert_string_equal(chat_err_code((enum chat_err)-1), "unavailable");
}

static void test_render_typing_presence(void **state)
{
	(void)state;
	expect_render(chat_typing_render("bob", "alice", NULL), "{\"type\":\"typing\",\"from\":\"bob\",\"to\":\"alice\"}");
	expect_render(chat_typing_render("bob", NULL, "team"), "{\"type\":\"typing\",\"from\":\"bob\",\"group\":\"team\"}");
	expect_render(chat_presence_render("bob", true, 1700000000000LL, 0),
			"{\"user\":\"bob\",\"status\":\"online\",\"ts\":1700000000000,\"last_seen\":null}");
	expect_render(chat_presence_render("bob", false, 20, 15),
			"{\"user\":\"bob\",\"status\":\"offline\",\"ts\":20,\"last_seen\":15}");
}

/* what the parser yields, the renderer reproduces */
static void test_parse_render_roundtrip(void **state)
{
	(void)state;
	const char *in = "{\"cid\":\"c1\",\"body\":\"h\\u00e9 \\\"x\\\"\",\"meta\":{\"reply_to\":\"42\",\"n\":[1,2.5]}}";
	struct parsed p;
	parse_str(&p, in);
	assert_int_equal(p.rc, CHAT_OK);
	struct chat_event ev = {
		.kind = CHAT_EV_MSG, .seq = 1, .ts = 2, .id = 3, .from = "a", .to = "b",
		.cid = p.s.cid, .body = p.s.body, .meta = p.s.meta,
	};
	expect_render(chat_event_render(&ev),
			"{\"type\":\"msg\",\"id\":\"3\",\"seq\":1,\"ts\":2,\"from\":\"a\",\"to\":\"b\",\"cid\":\"c1\","
			"\"body\":\"h\xc3\xa9 \\\"x\\\"\",\"meta\":{\"reply_to\":\"42\",\"n\":[1,2.5]}}");
	done(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_plain_text),
		cmocka_unit_test(test_send_json),
		cmocka_unit_test(test_send_bad_shapes),
		cmocka_unit_test(test_send_empty_and_utf8),
		cmocka_unit_test(test_send_json_refused_by_parser_is_bad_payload),
		cmocka_unit_test(test_receipt_good),
		cmocka_unit_test(test_receipt_bad),
		cmocka_unit_test(test_receipt_ids_strictly_decimal),
		cmocka_unit_test(test_render_dm),
		cmocka_unit_test(test_render_group_msg),
		cmocka_unit_test(test_render_receipt),
		cmocka_unit_test(test_render_group_event),
		cmocka_unit_test(test_render_error),
		cmocka_unit_test(test_render_typing_presence),
		cmocka_unit_test(test_parse_render_roundtrip),
	};
	return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}
