/* SPDX-License-Identifier: EPL-2.0
 * conf.h: "key = value" files (chat-rest's config file and the local
 * stack's defaults file that chatctl falls back to). '#' starts a comment.
 */
#ifndef CHAT_CONF_H
#define CHAT_CONF_H

#include <stddef.h>

struct chat_conf_kv {
	char *key;
	char *value;
};
struct chat_conf {
	struct chat_conf_kv *kv;
	size_t n;
};

/* 0 on success, -1 if the file cannot be read (errno set), -2 on a
 * malformed line (its number in *bad_line). */
int chat_conf_load(struct chat_conf *c, const char *path, int *bad_line);
/* Last value for key, or NULL. */
const char *chat_conf_get(const struct chat_conf *c, const char *key);
void chat_conf_free(struct chat_conf *c);

#endif
