/* SPDX-License-Identifier: EPL-2.0
 * plugin.c: mosquitto_chat.so entry points. Version, init and cleanup
 * only: parse the options, start the directory and writer threads, and
 * register the callbacks. Everything else lives in its own module.
 */
#include "chat.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "util.h"

#define CHAT_EXPORT __attribute__((visibility("default")))

static struct chat_plugin plugin_;

static const struct {
	int event;
	MOSQ_FUNC_generic_callback cb;
} CALLBACKS[] = {
	{MOSQ_EVT_BASIC_AUTH, chat_auth__basic_cb},
	{MOSQ_EVT_ACL_CHECK, chat_acl__check_cb},
	{MOSQ_EVT_MESSAGE, chat_intake__message_cb},
	{MOSQ_EVT_DISCONNECT, chat_presence__disconnect_cb},
	{MOSQ_EVT_TICK, chat_tick__cb},
};
#define NCALLBACKS (sizeof CALLBACKS / sizeof CALLBACKS[0])

CHAT_EXPORT int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static void release(struct chat_plugin *p)
{
	chat_store__stop(p);      /* drains: every accepted job committed or spooled */
	chat_dirthread__stop(p);
	/* results the writer finished after the last tick are durable; clients
	 * that missed them resync by seq over REST. */
	struct chat_res *r = chat_store__results(p);
	while(r){
		struct chat_res *n = r->next;
		if(r->kind == CHAT_RES_LOG) mosquitto_log_printf(r->level, "%s", r->payload);
		chat_res__free(r);
		r = n;
	}
	chat_store__free(p);
	chat_dir__free(p->dir);
	p->dir = NULL;
	chat_live__free_all(p);
	size_t it = 0;
	void *v;
	while(chat_hmap_next(&p->conns, &it, NULL, NULL, &v)) free(v);
	chat_hmap_free(&p->conns);
	chat_hmap_free(&p->contacts);
	chat_config__free(&p->cfg);
	memset(&p->secret, 0, sizeof p->secret);
}

CHAT_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct chat_plugin *p = &plugin_;
	char err[512];
	size_t ncb = 0;

	memset(p, 0, sizeof *p);
	p->pid = identifier;
	chat_hmap_init(&p->live);
	chat_hmap_init(&p->conns);
	chat_hmap_init(&p->contacts);

	if(chat_config__parse(&p->cfg, options, option_count, err, sizeof err)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "chat: config: %s", err);
		return MOSQ_ERR_INVAL;
	}
	if(chat_secret_load(&p->secret, p->cfg.token_secret_file, err, sizeof err)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "chat: config: %s", err);
		chat_config__free(&p->cfg);
		return MOSQ_ERR_INVAL;
	}

	/* Credentials of the internal wake-up connection: a username that is
	 * not a valid user id and a random password known only to this process. */
	unsigned char rnd[32];
	if(RAND_bytes(rnd, sizeof rnd) != 1){
		mosquitto_log_printf(MOSQ_LOG_ERR, "chat: no randomness for the wake-up credentials");
		chat_config__free(&p->cfg);
		return MOSQ_ERR_UNKNOWN;
	}
	chat_hex_encode(rnd, sizeof rnd, p->wake_pass);
	snprintf(p->wake_user, sizeof p->wake_user, "$chat-wake");
	snprintf(p->wake_clientid, sizeof p->wake_clientid, "$chat-wake-%ld", (long)getpid());

	if(chat_store__start(p)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "chat: cannot start the writer thread");
		goto fail;
	}
	if(chat_dirthread__start(p)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "chat: cannot start the directory thread");
		goto fail;
	}
	for(ncb = 0; ncb < NCALLBACKS; ncb++){
		if(mosquitto_callback_register(identifier, CALLBACKS[ncb].event, CALLBACKS[ncb].cb, NULL, p)){
			mosquitto_log_printf(MOSQ_LOG_ERR, "chat: cannot register callback %d", CALLBACKS[ncb].event);
			goto fail;
		}
	}
	*userdata = p;
	mosquitto_log_printf(MOSQ_LOG_INFO, "chat: ready (prefix %s, spool %s, max_payload %u, debounce %u ms)",
			p->cfg.prefix, p->cfg.spool_dir, p->cfg.max_payload, p->cfg.debounce_ms);
	return MOSQ_ERR_SUCCESS;

fail:
	while(ncb-- > 0) mosquitto_callback_unregister(identifier, CALLBACKS[ncb].event, CALLBACKS[ncb].cb, NULL);
	release(p);
	return MOSQ_ERR_UNKNOWN;
}

CHAT_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct chat_plugin *p = userdata;
	(void)options;
	(void)option_count;
	if(!p) return MOSQ_ERR_SUCCESS;
	for(size_t i = 0; i < NCALLBACKS; i++){
		mosquitto_callback_unregister(p->pid, CALLBACKS[i].event, CALLBACKS[i].cb, NULL);
	}
	release(p);
	return MOSQ_ERR_SUCCESS;
}
