/*
 * The throttle's fleet store: the address and account counters of every
 * instance, shared through Redis (ThrottleStore = redis://...), so that a
 * spray spread over a fleet is counted as one.
 *
 * The instance's own tables stay: every decision is made on them too, and
 * the stricter of the two answers holds, so a store that lost its data (a
 * restart) never lets through what this instance alone would stop. When
 * Redis does not answer, the store is skipped for a second at a time and
 * the instance goes on with its own counters (event=throttle_store_down,
 * then throttle_store_up).
 *
 * Accounts: the check before each bind is a Lua script run by the
 * directory thread that does the bind, which waits for Redis at most
 * ThrottleStoreTimeoutMs, as it waits for a domain controller. A bind under
 * way is a reservation (a member of a sorted set with its expiry), so
 * parallel attempts on several instances cannot overshoot a threshold, and
 * an instance that dies mid-bind leaves nothing behind past the
 * reservation's time. The bind's outcome, another script, needs no answer:
 * the store's thread sends it, and until it lands the reservation stands
 * for it.
 *
 * Addresses: a worker never waits for Redis. Its failed logon is queued for
 * the store's thread, which counts it in Redis and publishes the fleet's
 * count (and a ban) to every instance; each instance's thread writes what it
 * hears into its own table, where the workers read it.
 *
 * Redis sees keyed hashes only: the keys come from ThrottleKeyFile, the same
 * on every instance, never from Redis.
 */
#ifndef FG_THRSTORE_H
#define FG_THRSTORE_H

#include "throttle.h"

/* Parses ThrottleStore: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]. FG_OK,
 * or FG_ERROR with why (never the password). */
int ts_url_check(const char *url, char *why, size_t whylen);

/* Gives t the store its conf names (ThrottleStore), if any, with bind
 * reservations held at most reserve_s, and starts the store's thread.
 * Nothing is connected before the first use. FG_ERROR when out of memory
 * or threads. */
int ts_attach(struct throttle *t, uint32_t reserve_s);
/* Before thr_free: stops the thread, which writes into t's tables. */
void ts_detach(struct throttle *t);

struct ts_info {
    bool up;
    uint64_t errors;  /* calls that failed: Redis down, slow or refusing */
    uint64_t sent;    /* address failures counted in Redis */
    uint64_t dropped; /* address failures not sent: the store was down or the queue full */
    uint64_t learned; /* the fleet's address counts heard */
};
/* False when t has no store. */
bool ts_info(const struct throttle *t, struct ts_info *out);

#endif
