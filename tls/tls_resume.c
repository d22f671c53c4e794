/*
 * The per-thread cache of backend TLS sessions: see tls_resume.h.
 *
 * A table of TLS_RESUME_SLOTS entries scanned by a 64-bit hash of the key,
 * then the key itself: a few hundred comparisons of one word per backend
 * logon, far below one handshake's cost, and no structure to rebalance.
 * The table is made on the thread's first backend TLS logon and freed when
 * the thread ends (a pthread key's destructor).
 */
#include "tls_resume.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tls_resume_entry {
    uint64_t hash; /* 0: the slot is free */
    char *key;
    WOLFSSL_SESSION *sess;
    time_t born; /* monotonic seconds */
};

struct tls_resume {
    struct tls_resume_entry e[TLS_RESUME_SLOTS];
    size_t n;
};

static _Thread_local struct tls_resume *tls_resume_tab;
static pthread_key_t tls_resume_pkey;
static pthread_once_t tls_resume_once = PTHREAD_ONCE_INIT;

static void tls_resume_entry_clear(struct tls_resume *t, struct tls_resume_entry *e)
{
    if (!e->hash)
        return;
    wolfSSL_SESSION_free(e->sess);
    free(e->key);
    memset(e, 0, sizeof(*e));
    t->n--;
}

/* The thread ends: its sessions go with it. */
static void tls_resume_destroy(void *p)
{
    struct tls_resume *t = p;
    for (size_t i = 0; i < TLS_RESUME_SLOTS; i++)
        tls_resume_entry_clear(t, &t->e[i]);
    free(t);
    tls_resume_tab = NULL;
}

static void tls_resume_key_init(void)
{
    pthread_key_create(&tls_resume_pkey, tls_resume_destroy);
}

/* This thread's table, made on first use; NULL when out of memory. */
static struct tls_resume *tls_resume_table(void)
{
    if (tls_resume_tab)
        return tls_resume_tab;
    pthread_once(&tls_resume_once, tls_resume_key_init);
    struct tls_resume *t = calloc(1, sizeof(*t));
    if (t && pthread_setspecific(tls_resume_pkey, t) != 0) {
        free(t);
        t = NULL;
    }
    return tls_resume_tab = t;
}

/* FNV-1a, never 0 (0 marks a free slot). */
static uint64_t tls_resume_hash(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return h ? h : 1;
}

static time_t tls_resume_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return ts.tv_sec;
}

static struct tls_resume_entry *tls_resume_find(struct tls_resume *t, const char *key, uint64_t h)
{
    if (!t || t->n == 0)
        return NULL;
    for (size_t i = 0; i < TLS_RESUME_SLOTS; i++)
        if (t->e[i].hash == h && strcmp(t->e[i].key, key) == 0)
            return &t->e[i];
    return NULL;
}

WOLFSSL_SESSION *tls_resume_get(const char *key)
{
    struct tls_resume *t = tls_resume_tab;
    struct tls_resume_entry *e = tls_resume_find(t, key, tls_resume_hash(key));
    if (!e)
        return NULL;
    if (tls_resume_now() - e->born > TLS_RESUME_MAX_AGE) {
        tls_resume_entry_clear(t, e);
        return NULL;
    }
    return e->sess;
}

/* A free slot, or else the oldest entry's, emptied. */
static struct tls_resume_entry *tls_resume_slot(struct tls_resume *t)
{
    struct tls_resume_entry *old = &t->e[0];
    for (size_t i = 0; i < TLS_RESUME_SLOTS; i++) {
        if (!t->e[i].hash)
            return &t->e[i];
        if (t->e[i].born < old->born)
            old = &t->e[i];
    }
    tls_resume_entry_clear(t, old);
    return old;
}

void tls_resume_put(const char *key, WOLFSSL_SESSION *s)
{
    struct tls_resume *t = tls_resume_table();
    uint64_t h = tls_resume_hash(key);
    struct tls_resume_entry *e = tls_resume_find(t, key, h);
    char *k = NULL;
    if (!t || !(k = strdup(key))) {
        wolfSSL_SESSION_free(s);
        return;
    }
    if (e)
        tls_resume_entry_clear(t, e);
    else
        e = tls_resume_slot(t);
    *e = (struct tls_resume_entry){.hash = h, .key = k, .sess = s, .born = tls_resume_now()};
    t->n++;
}

void tls_resume_drop(const char *key)
{
    struct tls_resume *t = tls_resume_tab;
    struct tls_resume_entry *e = tls_resume_find(t, key, tls_resume_hash(key));
    if (e)
        tls_resume_entry_clear(t, e);
}

size_t tls_resume_count(void)
{
    return tls_resume_tab ? tls_resume_tab->n : 0;
}
