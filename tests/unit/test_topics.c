/* SPDX-License-Identifier: EPL-2.0
 * test_topics.c: chat_topic__classify (plugin/topics.c), the first step of
 * every ACL decision. Expected kinds follow the enum comments in chat.h:
 * OUTSIDE = not under the prefix; OTHER = under the prefix, no known shape
 * (the prefix level itself included); WILD_IN = a filter that can only
 * match under the prefix; WILD_ANY = a filter that may match both.
 * Covered with a one-level prefix ("chat") and a two-level one ("app/chat").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

static const char *kind_name(enum chat_topic_kind k)
{
	static const char *n[] = {"OUTSIDE", "DM", "GROUP", "RECEIPT", "TYPING", "TYPING_GROUP", "INBOX",
		"PRESENCE", "OTHER", "WILD_IN", "WILD_ANY"};
	return (unsigned)k < sizeof n / sizeof n[0] ? n[k] : "?";
}

struct tcase {
	const char *topic;
	enum chat_topic_kind kind;
	const char *arg; /* NULL: not checked */
};

static int check(const char *prefix, bool filter, const struct tcase *c, size_t n)
{
	int failures = 0;
	for(size_t i = 0; i < n; i++){
		struct chat_topic t = {.kind = (enum chat_topic_kind)99, .arg = NULL};
		chat_topic__classify(prefix, strlen(prefix), c[i].topic, filter, &t);
		if(t.kind != c[i].kind){
			print_error("prefix \"%s\" %s \"%s\": %s, want %s\n", prefix, filter ? "filter" : "topic",
					c[i].topic ? c[i].topic : "(null)", kind_name(t.kind), kind_name(c[i].kind));
			failures++;
			continue;
		}
		if(c[i].arg && (!t.arg || strcmp(t.arg, c[i].arg) != 0)){
			print_error("prefix \"%s\" %s \"%s\": arg \"%s\", want \"%s\"\n", prefix, filter ? "filter" : "topic",
					c[i].topic, t.arg ? t.arg : "(null)", c[i].arg);
			failures++;
		}
	}
	return failures;
}

#define CHECK(prefix, filter, cases) check(prefix, filter, cases, sizeof cases / sizeof cases[0])
#define RUN(prefix, filter, cases) do{ \
		int f_ = CHECK(prefix, filter, cases); \
		if(f_) fail_msg("%d classification(s) wrong", f_); \
	}while(0)

static void test_topics_prefix_chat(void **state)
{
	(void)state;
	static const struct tcase c[] = {
		{"chat/dm/bob", CHAT_T_DM, "bob"},
		{"chat/dm/", CHAT_T_DM, ""},
		{"chat/dm", CHAT_T_DM, ""},
		{"chat/dm/bob/extra", CHAT_T_DM, "bob/extra"},
		{"chat/dm/+", CHAT_T_DM, "+"},
		{"chat/group/team", CHAT_T_GROUP, "team"},
		{"chat/group", CHAT_T_GROUP, ""},
		{"chat/group/", CHAT_T_GROUP, ""},
		{"chat/receipt/bob", CHAT_T_RECEIPT, "bob"},
		{"chat/typing/bob", CHAT_T_TYPING, "bob"},
		{"chat/typing/group/team", CHAT_T_TYPING_GROUP, "team"},
		{"chat/typing/group/", CHAT_T_TYPING_GROUP, ""},
		{"chat/inbox/alice", CHAT_T_INBOX, "alice"},
		{"chat/inbox/alice/x", CHAT_T_INBOX, "alice/x"},
		{"chat/presence/alice", CHAT_T_PRESENCE, "alice"},
		{"chat", CHAT_T_OTHER, ""},
		{"chat/", CHAT_T_OTHER, ""},
		{"chat/foo", CHAT_T_OTHER, "foo"},
		{"chat/inbox", CHAT_T_OTHER, NULL},
		{"chat/presence", CHAT_T_OTHER, NULL},
		{"chat/DM/bob", CHAT_T_OTHER, NULL},
		{"chat/dmx/bob", CHAT_T_OTHER, NULL},
		{"chat//dm/bob", CHAT_T_OTHER, NULL},
		{"chat/#", CHAT_T_OTHER, "#"}, /* a topic, not a filter */
		{"chatx/dm/bob", CHAT_T_OUTSIDE, "chatx/dm/bob"},
		{"chatx", CHAT_T_OUTSIDE, NULL},
		{"cha", CHAT_T_OUTSIDE, NULL},
		{"Chat/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"xchat/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"/chat/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"foo/chat/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"", CHAT_T_OUTSIDE, ""},
		{"sensors/kitchen/temp", CHAT_T_OUTSIDE, "sensors/kitchen/temp"},
		{"$SYS/broker/uptime", CHAT_T_OUTSIDE, NULL},
		{"+/dm/bob", CHAT_T_OUTSIDE, NULL}, /* not a filter: literal '+' level */
	};
	RUN("chat", false, c);
	struct chat_topic t = {.kind = CHAT_T_DM};
	chat_topic__classify("chat", 4, NULL, false, &t);
	assert_int_equal(t.kind, CHAT_T_OUTSIDE);
	chat_topic__classify("chat", 4, NULL, true, &t);
	assert_int_equal(t.kind, CHAT_T_OUTSIDE);
}

static void test_filters_prefix_chat(void **state)
{
	(void)state;
	static const struct tcase c[] = {
		{"#", CHAT_T_WILD_ANY, NULL},
		{"+/inbox/bob", CHAT_T_WILD_ANY, NULL},
		{"+/#", CHAT_T_WILD_ANY, NULL},
		{"+/+", CHAT_T_WILD_ANY, NULL},
		{"+/+/+", CHAT_T_WILD_ANY, NULL},
		{"+/presence/#", CHAT_T_WILD_ANY, NULL},
		{"chat/#", CHAT_T_WILD_IN, "#"},
		{"chat/+", CHAT_T_WILD_IN, "+"},
		{"chat/+/bob", CHAT_T_WILD_IN, "+/bob"},
		{"chat/inbox/+", CHAT_T_WILD_IN, "inbox/+"},
		{"chat/inbox/#", CHAT_T_WILD_IN, "inbox/#"},
		{"chat/presence/+", CHAT_T_WILD_IN, "presence/+"},
		{"chat/+/+/#", CHAT_T_WILD_IN, NULL},
		{"chat/dm/bob", CHAT_T_DM, "bob"},
		{"chat/inbox/alice", CHAT_T_INBOX, "alice"},
		{"chat/presence/bob", CHAT_T_PRESENCE, "bob"},
		{"chat/typing/group/team", CHAT_T_TYPING_GROUP, "team"},
		{"chat", CHAT_T_OTHER, ""},
		{"chat/whatever", CHAT_T_OTHER, "whatever"},
		{"chatx/#", CHAT_T_OUTSIDE, NULL},
		{"chatx/+/bob", CHAT_T_OUTSIDE, NULL},
		{"foo/#", CHAT_T_OUTSIDE, NULL},
		{"foo/+/bar", CHAT_T_OUTSIDE, NULL},
		{"foo/+", CHAT_T_OUTSIDE, NULL},
		{"foo", CHAT_T_OUTSIDE, NULL},
		{"$SYS/#", CHAT_T_OUTSIDE, NULL},
		{"sensors/+/temp", CHAT_T_OUTSIDE, NULL},
	};
	RUN("chat", true, c);
}

static void test_topics_prefix_app_chat(void **state)
{
	(void)state;
	static const struct tcase c[] = {
		{"app/chat/dm/bob", CHAT_T_DM, "bob"},
		{"app/chat/group/team", CHAT_T_GROUP, "team"},
		{"app/chat/receipt/bob", CHAT_T_RECEIPT, "bob"},
		{"app/chat/typing/bob", CHAT_T_TYPING, "bob"},
		{"app/chat/typing/group/team", CHAT_T_TYPING_GROUP, "team"},
		{"app/chat/inbox/alice", CHAT_T_INBOX, "alice"},
		{"app/chat/presence/alice", CHAT_T_PRESENCE, "alice"},
		{"app/chat", CHAT_T_OTHER, ""},
		{"app/chat/", CHAT_T_OTHER, ""},
		{"app/chat/x", CHAT_T_OTHER, "x"},
		{"app", CHAT_T_OUTSIDE, NULL},
		{"app/", CHAT_T_OUTSIDE, NULL},
		{"app/cha", CHAT_T_OUTSIDE, NULL},
		{"app/chatx/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"app/other/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"chat/dm/bob", CHAT_T_OUTSIDE, NULL},
		{"x/app/chat/dm/bob", CHAT_T_OUTSIDE, NULL},
	};
	RUN("app/chat", false, c);
}

static void test_filters_prefix_app_chat(void **state)
{
	(void)state;
	static const struct tcase c[] = {
		{"app/+/dm/x", CHAT_T_WILD_ANY, NULL},
		{"app/+/+", CHAT_T_WILD_ANY, NULL},
		{"app/+/#", CHAT_T_WILD_ANY, NULL},
		{"app/#", CHAT_T_WILD_ANY, NULL},
		{"#", CHAT_T_WILD_ANY, NULL},
		{"+/#", CHAT_T_WILD_ANY, NULL},
		{"+/chat/#", CHAT_T_WILD_ANY, NULL},
		{"+/chat/inbox/+", CHAT_T_WILD_ANY, NULL},
		{"+/+/inbox/bob", CHAT_T_WILD_ANY, NULL},
		{"app/chat/#", CHAT_T_WILD_IN, "#"},
		{"app/chat/+/bob", CHAT_T_WILD_IN, "+/bob"},
		{"app/chat/inbox/+", CHAT_T_WILD_IN, "inbox/+"},
		{"app/chat/dm/bob", CHAT_T_DM, "bob"},
		{"app/chat", CHAT_T_OTHER, ""},
		{"+", CHAT_T_OUTSIDE, NULL},      /* one level: cannot be app/chat/... */
		{"app/chatx/#", CHAT_T_OUTSIDE, NULL},
		{"app/other/#", CHAT_T_OUTSIDE, NULL},
		{"other/#", CHAT_T_OUTSIDE, NULL},
		{"other/+/dm/x", CHAT_T_OUTSIDE, NULL},
		{"+/other/#", CHAT_T_OUTSIDE, NULL},
		{"+/cha/#", CHAT_T_OUTSIDE, NULL},
		{"app", CHAT_T_OUTSIDE, NULL},
		{"chat/#", CHAT_T_OUTSIDE, NULL},
	};
	RUN("app/chat", true, c);
}

/* BUG (low impact): a filter whose last level is '+' and that reaches
 * exactly the prefix depth also matches the prefix topic itself ("+"
 * matches "chat", "app/+" and "+/+" match "app/chat"), which classify()
 * puts under the prefix (CHAT_T_OTHER), besides matching topics outside.
 * By the enum comments that is CHAT_T_WILD_ANY; topics.c returns
 * CHAT_T_OUTSIDE ("'+' alone matches only one level"). acl.c treats
 * OUTSIDE and WILD_ANY alike today, so nothing leaks, but the kind is
 * wrong for any caller that relies on OUTSIDE meaning "never the prefix". */
static void test_filters_plus_at_prefix_depth(void **state)
{
	(void)state;
	static const struct tcase one[] = {
		{"+", CHAT_T_WILD_ANY, NULL},
	};
	static const struct tcase two[] = {
		{"app/+", CHAT_T_WILD_ANY, NULL},
		{"+/chat", CHAT_T_WILD_ANY, NULL},
		{"+/+", CHAT_T_WILD_ANY, NULL},
	};
	int f = CHECK("chat", true, one) + CHECK("app/chat", true, two);
	if(f) fail_msg("%d classification(s) wrong", f);
}

static void test_topic_user(void **state)
{
	(void)state;
	struct chat_plugin *p = calloc(1, sizeof *p);
	assert_non_null(p);
	p->cfg.prefix = (char *)"app/chat";
	p->cfg.prefix_len = 8;
	char buf[200];
	assert_ptr_equal(chat_topic__user(p, "inbox", "alice", buf, sizeof buf), buf);
	assert_string_equal(buf, "app/chat/inbox/alice");
	chat_topic__user(p, "presence", "bob", buf, sizeof buf);
	assert_string_equal(buf, "app/chat/presence/bob");
	/* round trip through classify */
	struct chat_topic t;
	chat_topic__classify(p->cfg.prefix, p->cfg.prefix_len, buf, false, &t);
	assert_int_equal(t.kind, CHAT_T_PRESENCE);
	assert_string_equal(t.arg, "bob");
	/* truncates instead of overflowing */
	char small[8];
	chat_topic__user(p, "inbox", "alice", small, sizeof small);
	assert_string_equal(small, "app/cha");
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_topics_prefix_chat),
		cmocka_unit_test(test_filters_prefix_chat),
		cmocka_unit_test(test_topics_prefix_app_chat),
		cmocka_unit_test(test_filters_prefix_app_chat),
		cmocka_unit_test(test_filters_plus_at_prefix_depth),
		cmocka_unit_test(test_topic_user),
	};
	return cmocka_run_group_tests_name("topics", tests, NULL, NULL);
}
