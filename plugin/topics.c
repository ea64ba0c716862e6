/* SPDX-License-Identifier: EPL-2.0
 * topics.c: classify topics and subscription filters against the chat
 * prefix. Pure functions over the topic string: the ACL and intake build
 * their O(1) decisions on this, and unit tests cover it without a broker.
 */
#include "chat.h"

#include <stdio.h>
#include <string.h>

static bool has_wild(const char *s)
{
	return strpbrk(s, "+#") != NULL;
}

/* rest: the part after "prefix/". */
static void classify_rest(const char *rest, struct chat_topic *out)
{
	static const struct {
		const char *name;
		enum chat_topic_kind kind;
	} T[] = {
		{"typing/group/", CHAT_T_TYPING_GROUP},
		{"dm/", CHAT_T_DM},
		{"group/", CHAT_T_GROUP},
		{"receipt/", CHAT_T_RECEIPT},
		{"typing/", CHAT_T_TYPING},
		{"inbox/", CHAT_T_INBOX},
		{"presence/", CHAT_T_PRESENCE},
	};
	for(size_t i = 0; i < sizeof T / sizeof T[0]; i++){
		size_t n = strlen(T[i].name);
		if(strncmp(rest, T[i].name, n) == 0){
			out->kind = T[i].kind;
			out->arg = rest + n;
			return;
		}
	}
	/* "dm" with no recipient level is still a send attempt */
	if(strcmp(rest, "dm") == 0 || strcmp(rest, "group") == 0){
		out->kind = rest[0] == 'd' ? CHAT_T_DM : CHAT_T_GROUP;
		out->arg = rest + strlen(rest);
		return;
	}
	out->kind = CHAT_T_OTHER;
	out->arg = rest;
}

void chat_topic__classify(const char *prefix, size_t plen, const char *topic, bool filter,
		struct chat_topic *out)
{
	out->kind = CHAT_T_OUTSIDE;
	out->arg = topic;
	if(!topic) return;

	if(strncmp(topic, prefix, plen) == 0 && (topic[plen] == '/' || topic[plen] == '\0')){
		if(topic[plen] == '\0'){
			out->kind = CHAT_T_OTHER;
			out->arg = topic + plen;
			return;
		}
		const char *rest = topic + plen + 1;
		if(filter && has_wild(rest)){
			out->kind = CHAT_T_WILD_IN;
			out->arg = rest;
			return;
		}
		classify_rest(rest, out);
		return;
	}
	if(!filter || !has_wild(topic)) return; /* outside */

	/* A filter with wildcards: walk it level by level against the prefix. */
	const char *f = topic, *p = prefix;
	bool wild_before = false;
	for(;;){
		const char *fe = strchr(f, '/');
		const char *pe = strchr(p, '/');
		size_t fl = fe ? (size_t)(fe - f) : strlen(f);
		size_t pl = pe ? (size_t)(pe - p) : strlen(p);
		if(fl == 1 && f[0] == '#'){
			out->kind = CHAT_T_WILD_ANY;
			return;
		}
		if(fl == 1 && f[0] == '+'){
			wild_before = true;
		}else if(fl != pl || strncmp(f, p, fl) != 0){
			return; /* a literal level differs: cannot match the prefix */
		}
		if(!pe){
			/* every prefix level matched; only a deeper level reaches chat topics */
			/* a '+' at or above the prefix depth also matches outside topics
			 * (and the prefix topic itself) */
			out->kind = wild_before ? CHAT_T_WILD_ANY : (fe ? CHAT_T_WILD_IN : CHAT_T_OUTSIDE);
			return;
		}
		if(!fe) return; /* filter shorter than the prefix */
		f = fe + 1;
		p = pe + 1;
	}
}

char *chat_topic__user(const struct chat_plugin *p, const char *what, const char *user, char *buf,
		size_t len)
{
	snprintf(buf, len, "%s/%s/%s", p->cfg.prefix, what, user);
	return buf;
}
