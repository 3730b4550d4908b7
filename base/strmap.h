/*
 * strmap.h - a hash map from strings to pointers (open addressing, linear
 * probing, tombstones). Keys are copied and owned by the map; values are
 * the caller's. Not thread-safe: each map belongs to one thread.
 */
#ifndef OUTBOXD_STRMAP_H
#define OUTBOXD_STRMAP_H

#include <stddef.h>

struct strmap;

struct strmap *strmap_new(void);
/* Frees the map and its keys, not the values; NULL is a no-op. */
void strmap_free(struct strmap *m);
size_t strmap_count(const struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* Sets key to value (non-NULL); returns the previous value or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *strmap_del(struct strmap *m, const char *key);

/* Iteration: i starts at 0; returns 0 at the end. Deleting the current
 * key during iteration is allowed. */
int strmap_next(const struct strmap *m, size_t *i, const char **key,
    void **value);

#endif
