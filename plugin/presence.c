/* SPDX-License-Identifier: EPL-2.0
 * presence.c: who is online, decided on the broker thread.
 * Devices are counted per user keyed on the connection (struct mosquitto *):
 * Mosquitto 2.0 has no CONNECT event, so a successful BASIC_AUTH counts a
 * device and every DISCONNECT (clean, network cut, keepalive, takeover)
 * uncounts it. Online is published once the first device has stayed for
 * the debounce window; offline when the last device goes. Client Wills on
 * presence topics are refused by the ACL, so only this file speaks there.
 */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "util.h"

struct chat_live *chat_live__get(struct chat_plugin *p, const char *user, bool create)
{
	struct chat_live *l = chat_hmap_get(&p->live, user);
	if(l || !create) return l;
	l = calloc(1, sizeof *l);
	if(!l) return NULL;
	snprintf(l->id, sizeof(l->id), "%s", user);
	l->typing_tokens = p->cfg.typing_per_s;
	if(chat_hmap_put(&p->live, l->id, l, NULL)){
		free(l);
		return NULL;
	}
	return l;
}

void chat_live__free_all(struct chat_plugin *p)
{
	size_t it = 0;
	void *v;
	while(chat_hmap_next(&p->live, &it, NULL, NULL, &v)) free(v);
	chat_hmap_free(&p->live);
	p->pending = NULL;
}

bool chat_presence__visible(const struct chat_plugin *p, const char *viewer, const char *user)
{
	if(strcmp(viewer, user) == 0) return true;
	char key[2 * (CHAT_ID_MAX + 1)];
	if(strlen(viewer) > CHAT_ID_MAX || strlen(user) > CHAT_ID_MAX) return false;
	size_t kl = chat_pair_key(key, viewer, user);
	if(chat_hmap_getn(&p->contacts, key, kl)) return true;
	if(!p->dir) return false;
	/* A common group: walk the viewer's groups (few per user) and look the
	 * other user up in each member set. */
	const struct chat_user *u = chat_hmap_get(&p->dir->users, viewer);
	if(!u) return false;
	for(size_t i = 0; i < u->ngroups; i++){
		if(chat_hmap_get(&u->groups[i]->members, user)) return true;
	}
	return false;
}

static void publish(struct chat_plugin *p, struct chat_live *l, bool online, int64_t now)
{
	char topic[512];
	char *payload = chat_presence_render(l->id, online, now, l->last_seen);
	if(!payload) return;
	chat_topic__user(p, "presence", l->id, topic, sizeof topic);
	mosquitto_broker_publish_copy(NULL, topic, (int)strlen(payload), payload, 1, true, NULL);
	free(payload);
	l->online_published = online;

	struct chat_job *j = calloc(1, sizeof *j);
	if(j){
		j->kind = CHAT_JOB_PRESENCE;
		j->ts = now;
		snprintf(j->from, sizeof(j->from), "%s", l->id);
		j->online = online;
		j->last_seen = l->last_seen;
		chat_store__enqueue(p, j);
	}
}

static void pending_remove(struct chat_plugin *p, struct chat_live *l)
{
	if(!l->on_pending) return;
	for(struct chat_live **pp = &p->pending; *pp; pp = &(*pp)->pending_next){
		if(*pp == l){
			*pp = l->pending_next;
			break;
		}
	}
	l->pending_next = NULL;
	l->on_pending = false;
}

void chat_presence__connected(struct chat_plugin *p, struct mosquitto *client, const char *user)
{
	struct chat_conn *c = NULL;
	void *old = NULL;
	c = calloc(1, sizeof *c);
	if(!c) return;
	snprintf(c->user, sizeof(c->user), "%s", user);
	if(chat_hmap_putn(&p->conns, &client, sizeof client, c, &old)){
		free(c);
		return;
	}
	if(old){
		/* the same connection authenticated twice: keep one count */
		struct chat_live *ol = chat_live__get(p, ((struct chat_conn *)old)->user, false);
		if(ol && ol->devices > 0) ol->devices--;
		free(old);
	}
	struct chat_live *l = chat_live__get(p, user, true);
	if(!l) return;
	atomic_fetch_add(&p->st_connected, 1);
	if(l->devices++ == 0 && !l->online_published && !l->on_pending){
		l->pending_since_ms = chat_mono_ns() / 1000000;
		l->pending_next = p->pending;
		p->pending = l;
		l->on_pending = true;
	}
}

int chat_presence__disconnect_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	struct chat_plugin *p = userdata;
	(void)event;
	struct mosquitto *client = ed->client;
	struct chat_conn *c = chat_hmap_deln(&p->conns, &client, sizeof client);
	if(!c) return MOSQ_ERR_SUCCESS; /* anonymous, refused, or the wake-up connection */
	struct chat_live *l = chat_live__get(p, c->user, false);
	free(c);
	atomic_fetch_sub(&p->st_connected, 1);
	if(!l || l->devices <= 0) return MOSQ_ERR_SUCCESS;
	if(--l->devices > 0) return MOSQ_ERR_SUCCESS; /* another device is still here */
	int64_t now = chat_now_ms();
	pending_remove(p, l); /* online inside the debounce window: publish nothing */
	if(l->online_published){
		l->last_seen = now;
		publish(p, l, false, now);
	}
	return MOSQ_ERR_SUCCESS;
}

void chat_presence__tick(struct chat_plugin *p, int64_t mono_ms)
{
	struct chat_live **pp = &p->pending;
	while(*pp){
		struct chat_live *l = *pp;
		if(mono_ms - l->pending_since_ms >= (int64_t)p->cfg.debounce_ms){
			*pp = l->pending_next;
			l->pending_next = NULL;
			l->on_pending = false;
			if(l->devices > 0 && !l->online_published) publish(p, l, true, chat_now_ms());
		}else{
			pp = &l->pending_next;
		}
	}
}

void chat_presence__restore(struct chat_plugin *p, const struct chat_dir *d)
{
	/* After a restart nobody is connected yet: whoever the table lists as
	 * online is published offline (no ghost online), everyone else gets
	 * their retained offline state back with last_seen. */
	int64_t now = chat_now_ms();
	for(size_t i = 0; i < d->npresence; i++){
		const struct chat_presence_row *r = &d->presence[i];
		struct chat_live *l = chat_live__get(p, r->user, true);
		if(!l) continue;
		if(l->devices > 0 || l->on_pending) continue; /* already reconnected */
		l->last_seen = r->online ? now : r->last_seen;
		if(r->online){
			l->online_published = true; /* so that publish() records the change */
			publish(p, l, false, now);
		}else{
			char topic[512];
			char *payload = chat_presence_render(l->id, false, now, l->last_seen);
			if(payload){
				chat_topic__user(p, "presence", l->id, topic, sizeof topic);
				mosquitto_broker_publish_copy(NULL, topic, (int)strlen(payload), payload, 1, true, NULL);
				free(payload);
			}
		}
	}
}
