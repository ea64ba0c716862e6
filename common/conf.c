/* SPDX-License-Identifier: EPL-2.0
 * conf.c: see conf.h.
 */
#include "conf.h"
#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static char *trim(char *s)
{
	while(*s && isspace((unsigned char)*s)) s++;
	size_t n = strlen(s);
	while(n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
	return s;
}

int chat_conf_load(struct chat_conf *c, const char *path, int *bad_line)
{
	memset(c, 0, sizeof *c);
	char *text = chat_read_file(path, 1 << 20, NULL);
	if(!text) return -1;
	int lineno = 0, rc = 0;
	char *next = text;
	while(next && *next){
		char *line = next;
		char *nl = strchr(line, '\n');
		if(nl){
			*nl = '\0';
			next = nl + 1;
		}else{
			next = NULL;
		}
		lineno++;
		char *l = trim(line);
		if(!*l || *l == '#') continue; /* '#' inside a value is kept */
		char *eq = strchr(l, '=');
		if(!eq){
			if(bad_line) *bad_line = lineno;
			rc = -2;
			break;
		}
		*eq = '\0';
		char *k = trim(l), *v = trim(eq + 1);
		if(!*k){
			if(bad_line) *bad_line = lineno;
			rc = -2;
			break;
		}
		struct chat_conf_kv *nkv = realloc(c->kv, (c->n + 1) * sizeof *nkv);
		if(!nkv){ rc = -1; break; }
		c->kv = nkv;
		c->kv[c->n].key = strdup(k);
		c->kv[c->n].value = strdup(v);
		c->n++;
		if(!c->kv[c->n - 1].key || !c->kv[c->n - 1].value){ rc = -1; break; }
	}
	free(text);
	if(rc) chat_conf_free(c);
	return rc;
}

const char *chat_conf_get(const struct chat_conf *c, const char *key)
{
	const char *v = NULL;
	for(size_t i = 0; i < c->n; i++){
		if(strcmp(c->kv[i].key, key) == 0) v = c->kv[i].value;
	}
	return v;
}

void chat_conf_free(struct chat_conf *c)
{
	for(size_t i = 0; i < c->n; i++){
		free(c->kv[i].key);
		free(c->kv[i].value);
	}
	free(c->kv);
	memset(c, 0, sizeof *c);
}
