/*
 * sd_notify(3)'s protocol: a datagram of NAME=VALUE lines to $NOTIFY_SOCKET.
 * A new socket per message: the messages are few (start, reload, stop), and
 * nothing is kept open that a worker could inherit or a reload could break.
 */
#include "notify.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void notify_send(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = path ? strlen(path) : 0;

    if (len < 2 || len >= sizeof sun.sun_path || (path[0] != '/' && path[0] != '@'))
        return;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    (void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
    close(fd);
}

void notify_ready(void)
{
    notify_send("READY=1\nSTATUS=serving");
}

void notify_reloading(void)
{
    struct timespec ts;
    char msg[80];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof msg, "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify_send(msg);
}

void notify_stopping(void)
{
    notify_send("STOPPING=1\nSTATUS=stopping");
}

void notify_status(const char *fmt, ...)
{
    char msg[512] = "STATUS=";
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg + 7, sizeof msg - 7, fmt, ap);
    va_end(ap);
    /* One line: a newline would start another NAME=VALUE. */
    for (char *p = msg; (p = strchr(p, '\n'));)
        *p = ' ';
    notify_send(msg);
}
