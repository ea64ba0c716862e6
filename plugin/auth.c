/* SPDX-License-Identifier: EPL-2.0
 * auth.c: MOSQ_EVT_BASIC_AUTH. Decides every CONNECT from memory in a few
 * microseconds: the user table is a snapshot loaded by the directory
 * thread, passwords are checked against the peppered HMAC verifier and
 * tokens by their HMAC signature. The PBKDF2 hash never runs here; when a
 * user has no usable verifier the directory thread checks it in the
 * background and this one CONNECT is refused (the next one passes).
 */
#include "chat.h"

#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "util.h"

/* An anonymous client may not wear a user's client id. */
static bool clientid_names_user(const struct chat_plugin *p, const char *clientid)
{
	char user[CHAT_ID_MAX + 1];
	if(!clientid || !p->dir) return false;
	const char *colon = strchr(clientid, ':');
	size_t n = colon ? (size_t)(colon - clientid) : strlen(clientid);
	if(n == 0 || n > CHAT_ID_MAX) return false;
	memcpy(user, clientid, n);
	user[n] = '\0';
	return chat_hmap_get(&p->dir->users, user) != NULL;
}

int chat_auth__basic_cb(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct chat_plugin *p = userdata;
	(void)event;

	const char *clientid = mosquitto_client_id(ed->client);
	const char *username = ed->username;
	const char *password = ed->password;

	if(!username){
		if(clientid_names_user(p, clientid)){
			mosquitto_log_printf(MOSQ_LOG_NOTICE, "chat: auth | refused | anonymous client id names a user");
			return MOSQ_ERR_AUTH;
		}
		return MOSQ_ERR_PLUGIN_DEFER; /* allow_anonymous decides */
	}

	if(strcmp(username, p->wake_user) == 0){
		if(password && clientid && strcmp(clientid, p->wake_clientid) == 0
				&& chat_ct_equal(password, strlen(password), p->wake_pass, strlen(p->wake_pass))){
			return MOSQ_ERR_SUCCESS;
		}
		return MOSQ_ERR_AUTH;
	}

	if(!chat_id_valid(username) || !p->dir){
		return MOSQ_ERR_AUTH;
	}
	struct chat_user *u = chat_hmap_get(&p->dir->users, username);
	if(!u || u->disabled || !password){
		return MOSQ_ERR_AUTH;
	}
	if(!chat_clientid_for_user(clientid, username)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "chat: auth | %s | refused | client id is not %s or %s:{device}",
				username, username, username);
		return MOSQ_ERR_AUTH;
	}

	bool ok = false;
	if(chat_token_like(password)){
		char sub[65];
		int64_t exp;
		ok = chat_token_verify(&p->secret, password, chat_now_ms() / 1000, sub, &exp) == CHAT_TOKEN_OK
			&& strcmp(sub, username) == 0;
	}
	if(!ok){
		/* not a token (or a password that merely looks like one) */
		int rc = chat_verifier_check(&p->secret, username, password, u->verifier);
		if(rc == 0){
			ok = true;
		}else if(rc == 2){
			/* No verifier under this secret: let the directory thread run
			 * PBKDF2 off this thread and store one. */
			chat_dirthread__slow_auth(p, username, password);
			mosquitto_log_printf(MOSQ_LOG_NOTICE,
					"chat: auth | %s | deferred | no verifier for this secret, checking in background", username);
		}
	}
	if(!ok){
		return MOSQ_ERR_AUTH;
	}
	chat_presence__connected(p, ed->client, username);
	return MOSQ_ERR_SUCCESS;
}
