/*
 * [global] User and Group: forestgate starts as root, binds its ports, opens
 * its logs and its stats socket, and then becomes User for good. The other
 * way to serve ports below 1024 needs none of this: start as the user with
 * CAP_NET_BIND_SERVICE (the systemd unit's AmbientCapabilities).
 */
#ifndef FG_PRIVDROP_H
#define FG_PRIVDROP_H

#include "config.h"

/*
 * Switches every thread of the process to cfg's User and Group (the
 * configuration resolved them), with the user's supplementary groups, after
 * handing the stats socket to that user. Then checks that root cannot be
 * regained. Without User, or when already running as that user, does
 * nothing. FG_ERROR (logged): forestgate must not serve.
 */
int privdrop_apply(const struct fg_config *cfg);

#endif
