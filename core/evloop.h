/*
 * The main thread's event loop: epoll over the few descriptors the main
 * thread serves (signals, the stats socket and its clients, the metrics
 * listener, the workers' replies), and a tick about every 250 ms for
 * deadlines. Nothing here runs on a worker; nothing here may block.
 */
#ifndef FG_EVLOOP_H
#define FG_EVLOOP_H

#include "../base/common.h"

#include <stdint.h>
#include <sys/epoll.h>

/* Embedded in its owner's struct; fn finds the owner with FG_CONTAINER_OF. */
struct ev_handler {
    int fd;
    void (*fn)(struct ev_handler *h, uint32_t events);
};

/* Called about every EV_TICK_MS with the monotonic time. */
struct ev_tick {
    struct fg_list node;
    void (*fn)(struct ev_tick *t, uint64_t now_ms);
};

#define EV_TICK_MS 250

struct evloop {
    int epfd;
    bool stop;
    uint64_t next_tick_ms;
    struct fg_list ticks;
};

/* FG_OK, or FG_ERROR with errno set. */
int ev_init(struct evloop *l);
void ev_free(struct evloop *l);

/* FG_OK, or FG_ERROR with errno set (the handler is then not watched). */
int ev_add(struct evloop *l, struct ev_handler *h, uint32_t events);
int ev_mod(struct evloop *l, struct ev_handler *h, uint32_t events);

/* Stops watching h; call it before closing h->fd. */
void ev_del(struct evloop *l, struct ev_handler *h);

void ev_tick_add(struct evloop *l, struct ev_tick *t);
void ev_tick_del(struct ev_tick *t);

/* Runs until ev_stop(); a handler may add or delete handlers, itself too. */
void ev_run(struct evloop *l);
void ev_stop(struct evloop *l);

uint64_t ev_now_ms(void);

#endif
