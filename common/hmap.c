/* SPDX-License-Identifier: EPL-2.0
 * hmap.c: linear probing with tombstones, grown at 70% load. The hash is
 * FNV-1a mixed with a per-process random seed so that ids chosen by
 * clients cannot be aimed at one probe chain.
 */
#include "hmap.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char TOMB_[1];
#define HMAP_TOMB TOMB_

static uint64_t seed_;

__attribute__((constructor)) static void seed_init(void)
{
	seed_ = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)(uintptr_t)&seed_;
	seed_ |= 1;
}

static uint64_t hash(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 1469598103934665603ULL ^ seed_;
	for(size_t i = 0; i < n; i++){
		h ^= s[i];
		h *= 1099511628211ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

void chat_hmap_init(struct chat_hmap *m)
{
	memset(m, 0, sizeof *m);
}

void chat_hmap_free(struct chat_hmap *m)
{
	for(size_t i = 0; i < m->cap; i++){
		if(m->slots[i].key && m->slots[i].key != HMAP_TOMB) free(m->slots[i].key);
	}
	free(m->slots);
	memset(m, 0, sizeof *m);
}

static struct chat_hmap_slot *find(const struct chat_hmap *m, const void *key, size_t klen, uint64_t h)
{
	if(!m->cap) return NULL;
	size_t mask = m->cap - 1;
	for(size_t i = h & mask;; i = (i + 1) & mask){
		struct chat_hmap_slot *s = &m->slots[i];
		if(!s->key) return NULL;
		if(s->key != HMAP_TOMB && s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0) return s;
	}
}

static int grow(struct chat_hmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 16;
	if(m->n * 2 < m->cap) ncap = m->cap; /* mostly tombstones: rehash in place size */
	struct chat_hmap_slot *ns = calloc(ncap, sizeof *ns);
	if(!ns) return -1;
	for(size_t i = 0; i < m->cap; i++){
		struct chat_hmap_slot *s = &m->slots[i];
		if(!s->key || s->key == HMAP_TOMB) continue;
		size_t j = s->hash & (ncap - 1);
		while(ns[j].key) j = (j + 1) & (ncap - 1);
		ns[j] = *s;
	}
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	m->used = m->n;
	return 0;
}

void *chat_hmap_getn(const struct chat_hmap *m, const void *key, size_t klen)
{
	struct chat_hmap_slot *s = find(m, key, klen, hash(key, klen));
	return s ? s->val : NULL;
}

void *chat_hmap_get(const struct chat_hmap *m, const char *key)
{
	return chat_hmap_getn(m, key, strlen(key));
}

int chat_hmap_putn(struct chat_hmap *m, const void *key, size_t klen, void *val, void **old)
{
	uint64_t h = hash(key, klen);
	if(old) *old = NULL;
	struct chat_hmap_slot *s = find(m, key, klen, h);
	if(s){
		if(old) *old = s->val;
		s->val = val;
		return 0;
	}
	if((m->used + 1) * 10 >= m->cap * 7){
		if(grow(m)) return -1;
	}
	char *k = malloc(klen + 1);
	if(!k) return -1;
	memcpy(k, key, klen);
	k[klen] = '\0';
	size_t mask = m->cap - 1;
	size_t i = h & mask;
	while(m->slots[i].key && m->slots[i].key != HMAP_TOMB) i = (i + 1) & mask;
	if(!m->slots[i].key) m->used++;
	m->slots[i] = (struct chat_hmap_slot){k, klen, h, val};
	m->n++;
	return 0;
}

int chat_hmap_put(struct chat_hmap *m, const char *key, void *val, void **old)
{
	return chat_hmap_putn(m, key, strlen(key), val, old);
}

void *chat_hmap_deln(struct chat_hmap *m, const void *key, size_t klen)
{
	struct chat_hmap_slot *s = find(m, key, klen, hash(key, klen));
	if(!s) return NULL;
	void *v = s->val;
	free(s->key);
	s->key = HMAP_TOMB;
	s->val = NULL;
	m->n--;
	return v;
}

void *chat_hmap_del(struct chat_hmap *m, const char *key)
{
	return chat_hmap_deln(m, key, strlen(key));
}

bool chat_hmap_next(const struct chat_hmap *m, size_t *it, const char **key, size_t *klen, void **val)
{
	for(; *it < m->cap; (*it)++){
		struct chat_hmap_slot *s = &m->slots[*it];
		if(s->key && s->key != HMAP_TOMB){
			if(key) *key = s->key;
			if(klen) *klen = s->klen;
			if(val) *val = s->val;
			(*it)++;
			return true;
		}
	}
	return false;
}

size_t chat_pair_key(char *buf, const char *a, const char *b)
{
	size_t al = strlen(a), bl = strlen(b);
	memcpy(buf, a, al);
	buf[al] = '\0';
	memcpy(buf + al + 1, b, bl);
	return al + 1 + bl;
}
