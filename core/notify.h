/*
 * systemd's readiness protocol (sd_notify(3)), without libsystemd: one
 * datagram per state to the socket named by $NOTIFY_SOCKET (a path, or an
 * abstract name written with a leading '@'). Without the variable, as when
 * forestgate runs outside a Type=notify unit, every call does nothing.
 * Failures are ignored: the service manager is told, never waited on.
 */
#ifndef FG_NOTIFY_H
#define FG_NOTIFY_H

/* READY=1: the listeners are bound and the workers serve. */
void notify_ready(void);

/* RELOADING=1 with MONOTONIC_USEC (systemd 253 wants it; 252 ignores it):
 * a reload starts; notify_ready() ends it. */
void notify_reloading(void);

/* STOPPING=1: forestgate stops or drains. */
void notify_stopping(void);

/* STATUS=...: one line that systemctl status shows. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
