/* SPDX-License-Identifier: EPL-2.0
 * tick.c: MOSQ_EVT_TICK, the broker thread's meeting point with the other
 * threads. It marks the wake-up poke consumed *before* draining, so a
 * result pushed after the drain always brings a new poke; publishes what
 * the writer made durable (inbox events with clientid NULL so the READ ACL
 * still applies, or to one device), swaps in directory snapshots, and runs
 * the presence debounce.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "util.h"

static void add_contact(struct chat_plugin *p, const char *a, const char *b)
{
	char key[2 * (CHAT_ID_MAX + 1)];
	size_t kl = chat_pair_key(key, a, b);
	chat_hmap_putn(&p->contacts, key, kl, (void *)1, NULL);
	kl = chat_pair_key(key, b, a);
	chat_hmap_putn(&p->contacts, key, kl, (void *)1, NULL);
}

void chat_tick__apply_dir(struct chat_plugin *p, struct chat_dir *d)
{
	struct chat_dir *old = p->dir;
	p->dir = d;
	if(d->outbox_upto || d->users_changed){
		/* In stream order: sends enqueued before this see the old
		 * membership, sends after it the new one, and the group events
		 * fall exactly between them. */
		struct chat_job *j = calloc(1, sizeof *j);
		if(j){
			j->kind = CHAT_JOB_OUTBOX;
			j->outbox_upto = d->outbox_upto;
			j->reload_counters = d->users_changed; /* users or groups deleted or re-created */
			chat_store__enqueue(p, j);
		}
	}
	if(d->first){
		for(size_t i = 0; i < d->ncontacts; i++) add_contact(p, d->contacts[i][0], d->contacts[i][1]);
		free(d->contacts);
		d->contacts = NULL;
		d->ncontacts = 0;
		if(!p->presence_restored){
			chat_presence__restore(p, d);
			p->presence_restored = true;
		}
		free(d->presence);
		d->presence = NULL;
		d->npresence = 0;
	}
	if(old){
		/* users deleted or disabled since the last snapshot lose their sessions */
		size_t it = 0;
		const char *k;
		void *v;
		while(chat_hmap_next(&old->users, &it, &k, NULL, &v)){
			const struct chat_user *nu = chat_hmap_get(&d->users, k);
			if((!nu || nu->disabled) && !((struct chat_user *)v)->disabled){
				mosquitto_log_printf(MOSQ_LOG_NOTICE, "chat: directory | %s | %s, disconnecting", k,
						nu ? "disabled" : "deleted");
				mosquitto_kick_client_by_username(k, false);
			}
		}
		chat_dir__free(old);
	}
}

int chat_tick__cb(int event, void *event_data, void *userdata)
{
	struct chat_plugin *p = userdata;
	(void)event;
	(void)event_data;

	chat_wake__consumed(p->wake);
	struct chat_res *r = chat_store__results(p);
	while(r){
		struct chat_res *n = r->next;
		switch(r->kind){
		case CHAT_RES_PUBLISH:
			mosquitto_broker_publish_copy(r->clientid, r->topic, (int)r->len, r->payload, r->qos, r->retain, NULL);
			break;
		case CHAT_RES_CONTACT:
			add_contact(p, r->a, r->b);
			break;
		case CHAT_RES_LOG:
			mosquitto_log_printf(r->level, "%s", r->payload);
			break;
		}
		chat_res__free(r);
		r = n;
	}

	struct chat_dir *d = chat_dirthread__take(p);
	if(d) chat_tick__apply_dir(p, d);

	chat_presence__tick(p, chat_mono_ns() / 1000000);
	return MOSQ_ERR_SUCCESS;
}
