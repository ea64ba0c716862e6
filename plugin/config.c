/* SPDX-License-Identifier: EPL-2.0
 * config.c: plugin_opt_* lines -> struct chat_config. One table lists
 * every option with its default and range; anything unknown or out of
 * range makes mosquitto_plugin_init fail loudly rather than run half-set.
 */
#include "chat.h"
#include "util.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

enum opt_type { OPT_STR, OPT_UINT, OPT_BOOLWORD };

struct opt_def {
	const char *name;
	enum opt_type type;
	size_t off;
	const char *def;     /* NULL: required */
	unsigned min, max;
};

#define OFF(f) offsetof(struct chat_config, f)
static const struct opt_def OPTS[] = {
	{"db_conninfo", OPT_STR, OFF(db_conninfo), NULL, 0, 0},
	{"token_secret_file", OPT_STR, OFF(token_secret_file), NULL, 0, 0},
	{"spool_dir", OPT_STR, OFF(spool_dir), "/var/lib/mosquitto/chat-spool", 0, 0},
	{"topic_prefix", OPT_STR, OFF(prefix), "chat", 0, 0},
	{"outside_prefix", OPT_BOOLWORD, OFF(outside_allow), "allow", 0, 0},
	{"max_payload", OPT_UINT, OFF(max_payload), "65536", 16, 16 * 1024 * 1024},
	{"presence_debounce_ms", OPT_UINT, OFF(debounce_ms), "3000", 0, 600000},
	{"node_id", OPT_UINT, OFF(node_id), "0", 0, 15},
	{"batch_max", OPT_UINT, OFF(batch_max), "256", 1, 10000},
	{"queue_max", OPT_UINT, OFF(queue_max), "100000", 10, 10000000},
	{"typing_per_s", OPT_UINT, OFF(typing_per_s), "5", 1, 1000},
	{"refresh_s", OPT_UINT, OFF(refresh_s), "30", 1, 86400},
	{"stats_s", OPT_UINT, OFF(stats_s), "10", 1, 86400},
	{"wakeup", OPT_STR, OFF(wakeup), "auto", 0, 0},
};

static int set_opt(struct chat_config *cfg, const struct opt_def *d, const char *v, char *err, size_t errlen)
{
	char *base = (char *)cfg;
	switch(d->type){
	case OPT_STR: {
		char **dst = (char **)(base + d->off);
		if(!*v){
			snprintf(err, errlen, "plugin_opt_%s must not be empty", d->name);
			return -1;
		}
		char *s = strdup(v);
		if(!s){
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		free(*dst);
		*dst = s;
		return 0;
	}
	case OPT_UINT: {
		char *end;
		errno = 0;
		unsigned long n = strtoul(v, &end, 10);
		if(errno || end == v || *end || v[0] < '0' || v[0] > '9' || n < d->min || n > d->max){
			snprintf(err, errlen, "plugin_opt_%s: \"%s\" is not a whole number from %u to %u", d->name, v,
					d->min, d->max);
			return -1;
		}
		*(unsigned *)(base + d->off) = (unsigned)n;
		return 0;
	}
	case OPT_BOOLWORD:
		if(strcmp(v, "allow") == 0) *(bool *)(base + d->off) = true;
		else if(strcmp(v, "deny") == 0) *(bool *)(base + d->off) = false;
		else{
			snprintf(err, errlen, "plugin_opt_%s must be allow or deny, not \"%s\"", d->name, v);
			return -1;
		}
		return 0;
	}
	return -1;
}

static bool prefix_ok(const char *s)
{
	size_t n = strlen(s);
	if(n == 0 || n > 200 || s[0] == '/' || s[n - 1] == '/' || s[0] == '$') return false;
	if(strstr(s, "//")) return false;
	for(const char *p = s; *p; p++){
		if(*p == '+' || *p == '#') return false;
	}
	return chat_utf8_valid(s, n);
}

int chat_config__parse(struct chat_config *cfg, struct mosquitto_opt *opts, int count, char *err,
		size_t errlen)
{
	const size_t nopts = sizeof OPTS / sizeof OPTS[0];
	memset(cfg, 0, sizeof *cfg);
	for(size_t i = 0; i < nopts; i++){
		if(OPTS[i].def && set_opt(cfg, &OPTS[i], OPTS[i].def, err, errlen)) goto fail;
	}
	for(int k = 0; k < count; k++){
		size_t i;
		for(i = 0; i < nopts; i++){
			if(strcmp(opts[k].key, OPTS[i].name) == 0) break;
		}
		if(i == nopts){
			snprintf(err, errlen, "unknown option plugin_opt_%s", opts[k].key);
			goto fail;
		}
		if(set_opt(cfg, &OPTS[i], opts[k].value ? opts[k].value : "", err, errlen)) goto fail;
	}
	for(size_t i = 0; i < nopts; i++){
		if(!OPTS[i].def && !*(char **)((char *)cfg + OPTS[i].off)){
			snprintf(err, errlen, "plugin_opt_%s is required", OPTS[i].name);
			goto fail;
		}
	}
	if(!prefix_ok(cfg->prefix)){
		snprintf(err, errlen, "plugin_opt_topic_prefix \"%s\" must be topic levels without wildcards, "
				"leading '$' or empty levels", cfg->prefix);
		goto fail;
	}
	cfg->prefix_len = strlen(cfg->prefix);
	if(strcmp(cfg->wakeup, "auto") != 0 && strcmp(cfg->wakeup, "off") != 0){
		const char *colon = strrchr(cfg->wakeup, ':');
		char *end = NULL;
		long port = colon && colon[1] >= '0' && colon[1] <= '9' ? strtol(colon + 1, &end, 10) : 0;
		if(!colon || colon == cfg->wakeup || !end || *end || port < 1 || port > 65535){
			snprintf(err, errlen, "plugin_opt_wakeup must be auto, off or HOST:PORT, not \"%s\"", cfg->wakeup);
			goto fail;
		}
	}
	return 0;
fail:
	chat_config__free(cfg);
	return -1;
}

void chat_config__free(struct chat_config *cfg)
{
	free(cfg->db_conninfo);
	free(cfg->token_secret_file);
	free(cfg->spool_dir);
	free(cfg->prefix);
	free(cfg->wakeup);
	memset(cfg, 0, sizeof *cfg);
}
