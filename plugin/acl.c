/* SPDX-License-Identifier: EPL-2.0
 * acl.c: MOSQ_EVT_ACL_CHECK, run for every publish, every subscription and
 * every delivered message, so each decision is a topic classification plus
 * at most a few hash lookups. Inside the prefix the plugin decides;
 * outside it applies plugin_opt_outside_prefix (Mosquitto 2.0 would deny
 * what every plugin defers).
 */
#include "chat.h"

#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static int outside(const struct chat_plugin *p)
{
	return p->cfg.outside_allow ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

static int can_read(const struct chat_plugin *p, const char *user, const struct chat_topic *t)
{
	switch(t->kind){
	case CHAT_T_INBOX:
		return strcmp(t->arg, user) == 0 ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	case CHAT_T_PRESENCE:
		return chat_presence__visible(p, user, t->arg) ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
	default:
		return MOSQ_ERR_ACL_DENIED;
	}
}

int chat_acl__check_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct chat_plugin *p = userdata;
	(void)event;

	const char *user = mosquitto_client_username(ed->client);
	struct chat_topic t;
	bool filter = ed->access == MOSQ_ACL_SUBSCRIBE || ed->access == MOSQ_ACL_UNSUBSCRIBE;
	chat_topic__classify(p->cfg.prefix, p->cfg.prefix_len, ed->topic, filter, &t);

	if(ed->access == MOSQ_ACL_UNSUBSCRIBE) return MOSQ_ERR_SUCCESS;

	if(user && strcmp(user, p->wake_user) == 0) return MOSQ_ERR_ACL_DENIED;

	if(t.kind == CHAT_T_OUTSIDE) return outside(p);
	if(t.kind == CHAT_T_WILD_ANY){
		/* e.g. "#": what it yields under the prefix is filtered per delivery */
		return outside(p);
	}
	/* Under the prefix from here on. */
	if(!user) return MOSQ_ERR_ACL_DENIED;

	switch(ed->access){
	case MOSQ_ACL_WRITE:
		switch(t.kind){
		case CHAT_T_DM:
		case CHAT_T_GROUP:
		case CHAT_T_RECEIPT:
		case CHAT_T_TYPING:
		case CHAT_T_TYPING_GROUP:
			return MOSQ_ERR_SUCCESS; /* intake validates and answers with error events */
		default:
			return MOSQ_ERR_ACL_DENIED; /* inbox, presence (also Wills), anything else */
		}
	case MOSQ_ACL_SUBSCRIBE:
		if(t.kind == CHAT_T_WILD_IN) return MOSQ_ERR_SUCCESS; /* deliveries are READ-checked */
		return can_read(p, user, &t);
	case MOSQ_ACL_READ:
		return can_read(p, user, &t);
	default:
		return MOSQ_ERR_ACL_DENIED;
	}
}
