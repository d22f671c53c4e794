#include "evloop.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#define EV_BATCH 64

uint64_t ev_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int ev_init(struct evloop *l)
{
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->stop = false;
    l->next_tick_ms = ev_now_ms() + EV_TICK_MS;
    fg_list_init(&l->ticks);
    return l->epfd < 0 ? FG_ERROR : FG_OK;
}

void ev_free(struct evloop *l)
{
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
}

static int ev_ctl(struct evloop *l, int op, struct ev_handler *h, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(l->epfd, op, h->fd, &ev) == 0 ? FG_OK : FG_ERROR;
}

int ev_add(struct evloop *l, struct ev_handler *h, uint32_t events)
{
    return ev_ctl(l, EPOLL_CTL_ADD, h, events);
}

int ev_mod(struct evloop *l, struct ev_handler *h, uint32_t events)
{
    return ev_ctl(l, EPOLL_CTL_MOD, h, events);
}

void ev_del(struct evloop *l, struct ev_handler *h)
{
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, h->fd, NULL);
}

void ev_tick_add(struct evloop *l, struct ev_tick *t)
{
    fg_list_add_tail(&l->ticks, &t->node);
}

void ev_tick_del(struct ev_tick *t)
{
    fg_list_del(&t->node);
}

void ev_stop(struct evloop *l)
{
    l->stop = true;
}

/* A tick may delete itself or the next one: walk from the head again after
 * each call, using a generation mark so each tick runs once per round. */
static void ev_run_ticks(struct evloop *l, uint64_t now)
{
    struct fg_list done;
    fg_list_init(&done);
    while (!fg_list_empty(&l->ticks)) {
        struct fg_list *n = l->ticks.next;
        fg_list_del(n);
        fg_list_add_tail(&done, n);
        FG_CONTAINER_OF(n, struct ev_tick, node)->fn(FG_CONTAINER_OF(n, struct ev_tick, node), now);
    }
    /* Put the survivors back, in their order. */
    while (!fg_list_empty(&done)) {
        struct fg_list *n = done.next;
        fg_list_del(n);
        fg_list_add_tail(&l->ticks, n);
    }
}

/*
 * Handlers deleted by an earlier handler of the same batch are the caller's
 * business: ev_del before free, and a freed handler's events are not in a
 * later epoll_wait. Within one batch, owners that free a handler other than
 * their own must defer the free to a tick (the stats server does).
 */
void ev_run(struct evloop *l)
{
    struct epoll_event evs[EV_BATCH];
    while (!l->stop) {
        uint64_t now = ev_now_ms();
        int wait = l->next_tick_ms > now ? (int)(l->next_tick_ms - now) : 0;
        int n = epoll_wait(l->epfd, evs, EV_BATCH, wait);
        if (n < 0 && errno != EINTR)
            return;
        for (int i = 0; i < n && !l->stop; i++) {
            struct ev_handler *h = evs[i].data.ptr;
            h->fn(h, evs[i].events);
        }
        now = ev_now_ms();
        if (now >= l->next_tick_ms) {
            l->next_tick_ms = now + EV_TICK_MS;
            ev_run_ticks(l, now);
        }
    }
}
