/* SPDX-License-Identifier: EPL-2.0
 * intake.c: MOSQ_EVT_MESSAGE for publishes under the chat prefix.
 * Validates on the broker thread from memory only (payload shape, UTF-8,
 * size, recipient, membership), stamps id and ts, and hands a job with
 * copied strings to the writer. Nothing is delivered from here: recipients
 * and the sender's acknowledgement are published by the tick once the
 * writer reports the message durable. Typing notices are the exception:
 * never stored, forwarded at once at QoS 0.
 */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "util.h"

/* 2024-01-01T00:00:00Z: ids stay below 2^63 for ~4,000 years. */
#define ID_EPOCH_MS 1704067200000LL

int64_t chat_intake__new_id(struct chat_plugin *p, int64_t now_ms)
{
	int64_t ms = now_ms - ID_EPOCH_MS;
	if(ms <= p->id_last_ms){
		ms = p->id_last_ms;
		if(++p->id_counter >= 65536){
			/* 65,536 ids in one millisecond: borrow the next one */
			ms++;
			p->id_counter = 0;
		}
	}else{
		p->id_counter = 0;
	}
	p->id_last_ms = ms;
	return (ms << 20) | ((int64_t)p->cfg.node_id << 16) | (int64_t)p->id_counter;
}

void chat_intake__error(struct chat_plugin *p, const char *user, const char *clientid,
		enum chat_err code, const char *cid, const char *reason)
{
	char topic[512];
	char *payload = chat_error_render(code, cid, reason);
	atomic_fetch_add(&p->st_errors, 1);
	if(!payload || !clientid) {
		free(payload);
		return;
	}
	chat_topic__user(p, "inbox", user, topic, sizeof topic);
	mosquitto_broker_publish_copy(clientid, topic, (int)strlen(payload), payload, 1, false, NULL);
	free(payload);
}

static struct chat_job *job_new(enum chat_job_kind kind, const char *user, const char *clientid)
{
	struct chat_job *j = calloc(1, sizeof *j);
	if(!j) return NULL;
	j->kind = kind;
	j->ts = chat_now_ms();
	snprintf(j->from, sizeof(j->from), "%s", user);
	snprintf(j->device, sizeof j->device, "%s", clientid ? clientid : "");
	return j;
}

static bool user_exists(const struct chat_plugin *p, const char *id)
{
	const struct chat_user *u = chat_id_valid(id) && p->dir ? chat_hmap_get(&p->dir->users, id) : NULL;
	return u && !u->disabled;
}

static const struct chat_group *member_group(const struct chat_plugin *p, const char *gid, const char *user)
{
	if(!chat_id_valid(gid) || !p->dir) return NULL;
	const struct chat_group *g = chat_hmap_get(&p->dir->groups, gid);
	if(!g || !chat_hmap_get(&g->members, user)) return NULL;
	return g;
}

static void enqueue(struct chat_plugin *p, struct chat_job *j, const char *user, const char *clientid)
{
	char cid[CHAT_CID_MAX + 1];
	snprintf(cid, sizeof cid, "%s", j->send.cid ? j->send.cid : "");
	if(chat_store__enqueue(p, j)){
		chat_intake__error(p, user, clientid, CHAT_E_UNAVAILABLE, cid[0] ? cid : NULL,
				"the server is overloaded, try again");
	}
}

static void intake_send(struct chat_plugin *p, const struct chat_topic *t, const char *user,
		const char *clientid, const void *payload, size_t len)
{
	struct chat_send s;
	char *cid = NULL;
	const char *reason = NULL;
	enum chat_err rc = chat_send_parse(payload, len, &s, &cid, &reason);
	if(rc != CHAT_OK){
		chat_intake__error(p, user, clientid, rc, cid, reason);
		free(cid);
		return;
	}
	const struct chat_group *g = NULL;
	if(t->kind == CHAT_T_DM){
		if(!user_exists(p, t->arg)){
			chat_intake__error(p, user, clientid, CHAT_E_UNKNOWN_RECIPIENT, cid, "no such user");
			goto out;
		}
	}else{
		g = member_group(p, t->arg, user);
		if(!g){
			chat_intake__error(p, user, clientid, CHAT_E_NOT_MEMBER, cid, "not a member of this group");
			goto out;
		}
	}
	struct chat_job *j = job_new(t->kind == CHAT_T_DM ? CHAT_JOB_DM : CHAT_JOB_GROUP, user, clientid);
	if(!j){
		chat_intake__error(p, user, clientid, CHAT_E_UNAVAILABLE, cid, "out of memory");
		goto out;
	}
	j->send = s;
	memset(&s, 0, sizeof s);
	j->id = chat_intake__new_id(p, j->ts);
	if(g){
		snprintf(j->group, sizeof(j->group), "%s", g->id);
		j->members = calloc(g->nmembers, sizeof *j->members);
		if(!j->members) goto oom;
		for(size_t i = 0; i < g->nmembers; i++){
			j->members[i] = strdup(g->member_ids[i]);
			if(!j->members[i]) goto oom;
			j->nmembers++;
		}
	}else{
		snprintf(j->to, sizeof(j->to), "%s", t->arg);
	}
	enqueue(p, j, user, clientid);
	goto out;
oom:
	chat_job__free(j);
	chat_intake__error(p, user, clientid, CHAT_E_UNAVAILABLE, cid, "out of memory");
out:
	chat_send_free(&s);
	free(cid);
}

static void intake_receipt(struct chat_plugin *p, const struct chat_topic *t, const char *user,
		const char *clientid, const void *payload, size_t len)
{
	const char *reason = NULL;
	struct chat_receipt_in *r = malloc(sizeof *r);
	if(!r) return;
	enum chat_err rc = chat_receipt_parse(payload, len, r, &reason);
	if(rc == CHAT_OK && !user_exists(p, t->arg)){
		rc = CHAT_E_UNKNOWN_RECIPIENT;
		reason = "no such user";
	}
	if(rc != CHAT_OK){
		chat_intake__error(p, user, clientid, rc, NULL, reason);
		free(r);
		return;
	}
	struct chat_job *j = job_new(CHAT_JOB_RECEIPT, user, clientid);
	if(!j){
		free(r);
		return;
	}
	j->receipt = r;
	snprintf(j->to, sizeof(j->to), "%s", t->arg);
	enqueue(p, j, user, clientid);
}

/* Token bucket per sender: typing_per_s notices a second, burst of the same. */
static bool typing_allowed(struct chat_plugin *p, const char *user)
{
	struct chat_live *l = chat_live__get(p, user, true);
	if(!l) return false;
	int64_t now = chat_mono_ns() / 1000000;
	double rate = p->cfg.typing_per_s;
	l->typing_tokens += (double)(now - l->typing_ms) * rate / 1000.0;
	if(l->typing_tokens > rate) l->typing_tokens = rate;
	l->typing_ms = now;
	if(l->typing_tokens < 1.0) return false;
	l->typing_tokens -= 1.0;
	return true;
}

static void typing_send(struct chat_plugin *p, const char *to_user, const char *payload)
{
	char topic[512];
	chat_topic__user(p, "inbox", to_user, topic, sizeof topic);
	mosquitto_broker_publish_copy(NULL, topic, (int)strlen(payload), payload, 0, false, NULL);
}

static void intake_typing(struct chat_plugin *p, const struct chat_topic *t, const char *user)
{
	if(t->kind == CHAT_T_TYPING){
		if(!user_exists(p, t->arg) || strcmp(t->arg, user) == 0) return;
		if(!typing_allowed(p, user)) return;
		char *payload = chat_typing_render(user, t->arg, NULL);
		if(payload) typing_send(p, t->arg, payload);
		free(payload);
		return;
	}
	const struct chat_group *g = member_group(p, t->arg, user);
	if(!g || !typing_allowed(p, user)) return;
	char *payload = chat_typing_render(user, NULL, g->id);
	if(!payload) return;
	for(size_t i = 0; i < g->nmembers; i++){
		if(strcmp(g->member_ids[i], user) != 0) typing_send(p, g->member_ids[i], payload);
	}
	free(payload);
}

int chat_intake__message_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	struct chat_plugin *p = userdata;
	(void)event;

	struct chat_topic t;
	chat_topic__classify(p->cfg.prefix, p->cfg.prefix_len, ed->topic, false, &t);
	if(t.kind == CHAT_T_OUTSIDE) return MOSQ_ERR_SUCCESS;

	const char *user = mosquitto_client_username(ed->client);
	const char *clientid = mosquitto_client_id(ed->client);
	if(!user || !clientid) return MOSQ_ERR_ACL_DENIED;

	/* Chat publishes are never retained and never routed as they are:
	 * nobody may subscribe to send topics, and the stored, stamped event
	 * goes out on the inbox topics instead. */
	ed->retain = false;
	atomic_fetch_add(&p->st_received, 1);

	if(t.kind == CHAT_T_TYPING || t.kind == CHAT_T_TYPING_GROUP){
		intake_typing(p, &t, user);
		return MOSQ_ERR_SUCCESS;
	}
	if(ed->payloadlen > p->cfg.max_payload){
		/* try to echo the cid without parsing a huge payload twice */
		char *cid = NULL;
		struct chat_send s;
		const char *reason;
		if(chat_send_parse(ed->payload, ed->payloadlen, &s, &cid, &reason) == CHAT_OK){
			free(cid);
			cid = s.cid ? strdup(s.cid) : NULL;
			chat_send_free(&s);
		}
		chat_intake__error(p, user, clientid, CHAT_E_TOO_LARGE, cid, "payload is larger than the server accepts");
		free(cid);
		return MOSQ_ERR_SUCCESS;
	}
	switch(t.kind){
	case CHAT_T_DM:
	case CHAT_T_GROUP:
		intake_send(p, &t, user, clientid, ed->payload, ed->payloadlen);
		break;
	case CHAT_T_RECEIPT:
		intake_receipt(p, &t, user, clientid, ed->payload, ed->payloadlen);
		break;
	default:
		return MOSQ_ERR_ACL_DENIED; /* the ACL already refuses these */
	}
	return MOSQ_ERR_SUCCESS;
}
