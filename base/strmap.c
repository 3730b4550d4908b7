/* strmap.c - see strmap.h. FNV-1a hashing; the table doubles at 70% load. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/strmap.h"
#include "base/util.h"

struct slot {
	char *key;	/* NULL: empty; TOMBSTONE: deleted */
	void *value;
	uint64_t hash;
};

struct strmap {
	struct slot *slots;
	size_t cap;	/* a power of two */
	size_t used;	/* live keys */
	size_t filled;	/* live keys plus tombstones */
};

static char tombstone_mark;
#define TOMBSTONE (&tombstone_mark)

static uint64_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

struct strmap *
strmap_new(void)
{
	struct strmap *m = xcalloc(1, sizeof(*m));

	m->cap = 16;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	return m;
}

void
strmap_free(struct strmap *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->cap; i++)
		if (m->slots[i].key != NULL && m->slots[i].key != TOMBSTONE)
			free(m->slots[i].key);
	free(m->slots);
	free(m);
}

size_t
strmap_count(const struct strmap *m)
{
	return m->used;
}

/* The slot holding key, or NULL. */
static struct slot *
find(const struct strmap *m, const char *key, uint64_t h)
{
	size_t i = h & (m->cap - 1);

	for (;;) {
		struct slot *s = &m->slots[i];

		if (s->key == NULL)
			return NULL;
		if (s->key != TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0)
			return s;
		i = (i + 1) & (m->cap - 1);
	}
}

static void
grow(struct strmap *m)
{
	struct slot *old = m->slots;
	size_t oldcap = m->cap, i;

	if (m->used * 2 >= m->cap)
		m->cap *= 2;	/* else same size: just drop tombstones */
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	m->filled = m->used;
	for (i = 0; i < oldcap; i++) {
		size_t j;

		if (old[i].key == NULL || old[i].key == TOMBSTONE)
			continue;
		j = old[i].hash & (m->cap - 1);
		while (m->slots[j].key != NULL)
			j = (j + 1) & (m->cap - 1);
		m->slots[j] = old[i];
	}
	free(old);
}

void *
strmap_get(const struct strmap *m, const char *key)
{
	struct slot *s = find(m, key, hash_str(key));

	return s ? s->value : NULL;
}

void *
strmap_put(struct strmap *m, const char *key, void *value)
{
	uint64_t h = hash_str(key);
	struct slot *s = find(m, key, h);
	size_t i;

	if (s != NULL) {
		void *prev = s->value;

		s->value = value;
		return prev;
	}
	if ((m->filled + 1) * 10 >= m->cap * 7)
		grow(m);
	i = h & (m->cap - 1);
	while (m->slots[i].key != NULL && m->slots[i].key != TOMBSTONE)
		i = (i + 1) & (m->cap - 1);
	if (m->slots[i].key == NULL)
		m->filled++;
	m->slots[i].key = xstrdup(key);
	m->slots[i].value = value;
	m->slots[i].hash = h;
	m->used++;
	return NULL;
}

void *
strmap_del(struct strmap *m, const char *key)
{
	struct slot *s = find(m, key, hash_str(key));
	void *v;

	if (s == NULL)
		return NULL;
	v = s->value;
	free(s->key);
	s->key = TOMBSTONE;
	s->value = NULL;
	m->used--;
	return v;
}

int
strmap_next(const struct strmap *m, size_t *i, const char **key, void **value)
{
	for (; *i < m->cap; (*i)++) {
		struct slot *s = &m->slots[*i];

		if (s->key != NULL && s->key != TOMBSTONE) {
			*key = s->key;
			*value = s->value;
			(*i)++;
			return 1;
		}
	}
	return 0;
}
