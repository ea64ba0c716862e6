/* SPDX-License-Identifier: EPL-2.0
 * hmap.h: a small open-addressing hash map from byte-string keys to
 * pointers. Used for the broker's O(1) lookups (users, groups, contacts,
 * connections) and by the writer for counters. Not thread-safe: each map has
 * one owning thread. Keys are copied; values are borrowed.
 */
#ifndef CHAT_HMAP_H
#define CHAT_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chat_hmap_slot {
	char *key;        /* NULL: empty; HMAP_TOMB: deleted */
	size_t klen;
	uint64_t hash;
	void *val;
};
struct chat_hmap {
	struct chat_hmap_slot *slots;
	size_t cap;       /* power of two */
	size_t n;         /* live entries */
	size_t used;      /* live + tombstones */
};

void chat_hmap_init(struct chat_hmap *m);
/* Frees the map's slots and keys; values are the caller's. */
void chat_hmap_free(struct chat_hmap *m);

void *chat_hmap_getn(const struct chat_hmap *m, const void *key, size_t klen);
void *chat_hmap_get(const struct chat_hmap *m, const char *key);
/* Insert or replace. Returns 0, or -1 out of memory. *old (if given)
 * receives the replaced value or NULL. */
int chat_hmap_putn(struct chat_hmap *m, const void *key, size_t klen, void *val, void **old);
int chat_hmap_put(struct chat_hmap *m, const char *key, void *val, void **old);
/* Remove; returns the value or NULL. */
void *chat_hmap_deln(struct chat_hmap *m, const void *key, size_t klen);
void *chat_hmap_del(struct chat_hmap *m, const char *key);

/* Iterate: for(size_t i = 0; chat_hmap_next(m, &i, &k, &kl, &v);) */
bool chat_hmap_next(const struct chat_hmap *m, size_t *it, const char **key, size_t *klen, void **val);

/* Key of a pair of ids "a\0b" in buf (>= 2*65 bytes); returns length. */
size_t chat_pair_key(char *buf, const char *a, const char *b);

#endif
