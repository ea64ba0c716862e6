/* SPDX-License-Identifier: EPL-2.0
 * event.c: parse client payloads and render inbox events (see event.h).
 * Field order is fixed (JSON_PRESERVE_ORDER) so that a stored event renders
 * to the same bytes in the broker and in chat-rest.
 */
#include "event.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ERR_CODES[] = {
	[CHAT_OK] = "ok",
	[CHAT_E_BAD_PAYLOAD] = "bad_payload",
	[CHAT_E_TOO_LARGE] = "too_large",
	[CHAT_E_UNKNOWN_RECIPIENT] = "unknown_recipient",
	[CHAT_E_NOT_MEMBER] = "not_member",
	[CHAT_E_BLOCKED] = "blocked",
	[CHAT_E_RATE_LIMITED] = "rate_limited",
	[CHAT_E_UNAVAILABLE] = "unavailable",
};

const char *chat_err_code(enum chat_err e)
{
	if((unsigned)e >= sizeof ERR_CODES / sizeof ERR_CODES[0]) return "unavailable";
	return ERR_CODES[e];
}

void chat_send_free(struct chat_send *s)
{
	free(s->cid);
	free(s->body);
	free(s->meta);
	memset(s, 0, sizeof *s);
}

/* 1 to 64 characters (code points; the text is valid UTF-8 already). */
static bool cid_ok(const char *cid)
{
	size_t chars = 0;
	for(const unsigned char *p = (const unsigned char *)cid; *p; p++){
		if((*p & 0xC0) != 0x80) chars++;
	}
	return chars >= 1 && chars <= CHAT_CID_MAX;
}

enum chat_err chat_send_parse(const void *payload, size_t len, struct chat_send *out, char **cid_out,
		const char **reason)
{
	memset(out, 0, sizeof *out);
	if(cid_out) *cid_out = NULL;
	if(!payload || len == 0){
		*reason = "empty message";
		return CHAT_E_BAD_PAYLOAD;
	}
	if(!chat_utf8_valid(payload, len)){
		*reason = "payload is not valid UTF-8";
		return CHAT_E_BAD_PAYLOAD;
	}
	json_error_t jerr;
	json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if(!root && (json_error_code(&jerr) == json_error_duplicate_key
				|| json_error_code(&jerr) == json_error_null_character)){
		/* JSON, but not acceptable JSON: never store it as text. Read it
		 * leniently once more, only to echo a readable cid. */
		*reason = "JSON payload with duplicate keys or NUL characters";
		json_t *lax = json_loadb(payload, len, JSON_ALLOW_NUL, &jerr);
		const char *laxcid = json_string_value(json_object_get(lax, "cid"));
		if(laxcid && cid_ok(laxcid) && cid_out && strlen(laxcid) == json_string_length(json_object_get(lax, "cid")))
			*cid_out = strdup(laxcid);
		json_decref(lax);
		return CHAT_E_BAD_PAYLOAD;
	}
	if(!root){
		/* Not JSON: plain text is the body. */
		if(len == 0){
			*reason = "empty message";
			return CHAT_E_BAD_PAYLOAD;
		}
		out->body = malloc(len + 1);
		if(!out->body){
			*reason = "out of memory";
			return CHAT_E_BAD_PAYLOAD;
		}
		memcpy(out->body, payload, len);
		out->body[len] = '\0';
		return CHAT_OK;
	}
	enum chat_err rc = CHAT_E_BAD_PAYLOAD;
	if(!json_is_object(root)){
		*reason = "JSON payload must be an object with a string \"body\"";
		goto done;
	}
	json_t *jcid = json_object_get(root, "cid");
	const char *cid = json_string_value(jcid);
	if(cid && cid_ok(cid) && cid_out) *cid_out = strdup(cid);
	if(jcid && (!cid || !cid_ok(cid))){
		*reason = "\"cid\" must be a string of 1 to 64 characters";
		goto done;
	}
	const char *body = json_string_value(json_object_get(root, "body"));
	if(!body){
		*reason = "JSON payload must have a string \"body\"";
		goto done;
	}
	json_t *jmeta = json_object_get(root, "meta");
	if(jmeta && !json_is_object(jmeta) && !json_is_null(jmeta)){
		*reason = "\"meta\" must be an object";
		goto done;
	}
	out->body = strdup(body);
	out->cid = cid ? strdup(cid) : NULL;
	if(jmeta && json_is_object(jmeta)){
		out->meta = json_dumps(jmeta, JSON_COMPACT | JSON_PRESERVE_ORDER);
	}
	if(!out->body || (cid && !out->cid) || (jmeta && json_is_object(jmeta) && !out->meta)){
		chat_send_free(out);
		*reason = "out of memory";
		goto done;
	}
	rc = CHAT_OK;
done:
	json_decref(root);
	return rc;
}

enum chat_err chat_receipt_parse(const void *payload, size_t len, struct chat_receipt_in *out,
		const char **reason)
{
	memset(out, 0, sizeof *out);
	json_error_t jerr;
	json_t *root = NULL;
	enum chat_err rc = CHAT_E_BAD_PAYLOAD;
	if(!payload || len == 0){
		*reason = "empty receipt";
		return rc;
	}
	if(!chat_utf8_valid(payload, len)){
		*reason = "payload is not valid UTF-8";
		return rc;
	}
	root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
	if(!root || !json_is_object(root)){
		*reason = "receipt must be {\"status\":\"delivered\"|\"read\",\"ids\":[…]}";
		goto done;
	}
	const char *status = json_string_value(json_object_get(root, "status"));
	json_t *ids = json_object_get(root, "ids");
	if(!status || (strcmp(status, "read") != 0 && strcmp(status, "delivered") != 0)){
		*reason = "\"status\" must be \"delivered\" or \"read\"";
		goto done;
	}
	if(!json_is_array(ids) || json_array_size(ids) == 0 || json_array_size(ids) > CHAT_RECEIPT_MAX_IDS){
		*reason = "\"ids\" must be an array of 1 to 256 message ids";
		goto done;
	}
	out->read = strcmp(status, "read") == 0;
	size_t i;
	json_t *v;
	json_array_foreach(ids, i, v){
		const char *s = json_string_value(v);
		char *end;
		if(!s || !*s || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s)){
			*reason = "message ids are decimal strings";
			goto done;
		}
		errno = 0;
		long long id = strtoll(s, &end, 10);
		if(errno || *end || id <= 0){
			*reason = "message ids are decimal strings";
			goto done;
		}
		out->ids[out->n++] = id;
	}
	rc = CHAT_OK;
done:
	json_decref(root);
	return rc;
}

/* Small JSON writer: jansson objects keep insertion order with
 * JSON_PRESERVE_ORDER, and "id" is a string on the wire. */
static int set_str(json_t *o, const char *k, const char *v)
{
	return json_object_set_new(o, k, v ? json_string(v) : json_null());
}

static int set_int(json_t *o, const char *k, int64_t v)
{
	return json_object_set_new(o, k, json_integer(v));
}

static char *dump(json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	return s;
}

char *chat_event_render(const struct chat_event *ev)
{
	json_t *o = json_object();
	if(!o) return NULL;
	char idbuf[24];
	switch(ev->kind){
	case CHAT_EV_MSG:
		snprintf(idbuf, sizeof idbuf, "%lld", (long long)ev->id);
		set_str(o, "type", "msg");
		set_str(o, "id", idbuf);
		set_int(o, "seq", ev->seq);
		set_int(o, "ts", ev->ts);
		set_str(o, "from", ev->from);
		if(ev->group){
			set_str(o, "group", ev->group);
			set_int(o, "gseq", ev->gseq);
		}else{
			set_str(o, "to", ev->to);
		}
		if(ev->cid) set_str(o, "cid", ev->cid);
		set_str(o, "body", ev->body ? ev->body : "");
		if(ev->meta){
			json_error_t jerr;
			json_t *m = json_loads(ev->meta, JSON_REJECT_DUPLICATES, &jerr);
			if(m) json_object_set_new(o, "meta", m);
		}
		break;
	case CHAT_EV_RECEIPT: {
		set_str(o, "type", "receipt");
		set_int(o, "seq", ev->seq);
		set_int(o, "ts", ev->ts);
		set_str(o, "from", ev->from);
		set_str(o, "status", ev->read ? "read" : "delivered");
		json_t *a = json_array();
		for(size_t i = 0; a && i < ev->nids; i++) json_array_append_new(a, json_string(ev->ids[i]));
		json_object_set_new(o, "ids", a ? a : json_array());
		break;
	}
	case CHAT_EV_GROUP:
		set_str(o, "type", "group");
		set_int(o, "seq", ev->seq);
		set_int(o, "ts", ev->ts);
		set_str(o, "group", ev->group);
		set_str(o, "event", ev->gevent);
		set_str(o, "user", ev->guser);
		set_str(o, "by", ev->gby);
		break;
	}
	return dump(o);
}

char *chat_error_render(enum chat_err code, const char *cid, const char *reason)
{
	json_t *o = json_object();
	if(!o) return NULL;
	set_str(o, "type", "error");
	if(cid) set_str(o, "cid", cid);
	set_str(o, "code", chat_err_code(code));
	set_str(o, "reason", reason ? reason : chat_err_code(code));
	return dump(o);
}

char *chat_typing_render(const char *from, const char *to, const char *group)
{
	json_t *o = json_object();
	if(!o) return NULL;
	set_str(o, "type", "typing");
	set_str(o, "from", from);
	if(group) set_str(o, "group", group);
	else set_str(o, "to", to);
	return dump(o);
}

char *chat_presence_render(const char *user, bool online, int64_t ts, int64_t last_seen)
{
	json_t *o = json_object();
	if(!o) return NULL;
	set_str(o, "user", user);
	set_str(o, "status", online ? "online" : "offline");
	set_int(o, "ts", ts);
	json_object_set_new(o, "last_seen", last_seen > 0 ? json_integer(last_seen) : json_null());
	return dump(o);
}
