/*
 * Dropping root. glibc applies setgroups/setgid/setuid to every thread of
 * the process (the workers and the directory's threads already run), so
 * one call each is enough; /proc/PID/task/N/status shows it per thread.
 */
#include "privdrop.h"

#include "../base/log.h"

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* The stats socket was made by root with mode 0600: the user must be able to
 * connect to it (forestgate ctl, run as that user) and unlink it at exit. */
static void privdrop_chown_stats(const struct fg_config *cfg)
{
    if (cfg->stats_socket[0] && chown(cfg->stats_socket, cfg->run_uid, cfg->run_gid) != 0)
        log_msg(LOG_WARN, "privileges", "cannot hand StatsSocket %s to %s: %s", cfg->stats_socket,
                cfg->user, strerror(errno));
}

/* After the switch, root must be out of reach: real, effective and saved. */
static int privdrop_verify(const struct fg_config *cfg)
{
    uid_t r, e, s;
    gid_t rg, eg, sg;

    if (getresuid(&r, &e, &s) != 0 || getresgid(&rg, &eg, &sg) != 0)
        return FG_ERROR;
    if (r != cfg->run_uid || e != cfg->run_uid || s != cfg->run_uid || rg != cfg->run_gid ||
        eg != cfg->run_gid || sg != cfg->run_gid)
        return FG_ERROR;
    if (cfg->run_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
        return FG_ERROR;
    return FG_OK;
}

/* NULL, or the call that failed (errno says why). Groups first: once the
 * uid is gone, so is the right to change them. */
static const char *privdrop_switch(const struct fg_config *cfg)
{
    if (initgroups(cfg->user, cfg->run_gid) != 0)
        return "initgroups";
    if (setgid(cfg->run_gid) != 0)
        return "setgid";
    if (setuid(cfg->run_uid) != 0)
        return "setuid";
    return NULL;
}

int privdrop_apply(const struct fg_config *cfg)
{
    if (!cfg->user[0])
        return FG_OK;
    /* Started as the user already (a unit's User=): nothing to give up. */
    if (geteuid() == cfg->run_uid && getuid() == cfg->run_uid && getegid() == cfg->run_gid)
        return FG_OK;
    if (geteuid() != 0) {
        log_msg(LOG_ERROR, "privileges",
                "User = %s: only root can switch to it (running as uid %u)", cfg->user,
                (unsigned)geteuid());
        return FG_ERROR;
    }
    privdrop_chown_stats(cfg);
    const char *step = privdrop_switch(cfg);
    if (step) {
        log_msg(LOG_ERROR, "privileges", "cannot switch to User %s: %s failed: %s", cfg->user, step,
                strerror(errno));
        return FG_ERROR;
    }
    if (privdrop_verify(cfg) != FG_OK) {
        log_msg(LOG_ERROR, "privileges", "switched to User %s, but root could be regained",
                cfg->user);
        return FG_ERROR;
    }
    log_msg(LOG_INFO, "privileges", "running as User %s (uid %u, gid %u)", cfg->user,
            (unsigned)cfg->run_uid, (unsigned)cfg->run_gid);
    return FG_OK;
}
