/*
 * Run-time tuning: the stats socket's "set SETTING VALUE", for the settings
 * that can change while forestgate runs: the timeouts, LogLevel,
 * ProtocolLogEnabled, the connection limits, FailedLogonDelayMs and the
 * route cache's TTLs.
 *
 * SETTING is Section.Name (imap.MaxConnectionFromSingleIP) or Name alone
 * when only one section in use has it. The value is read by the
 * configuration's own parser (config_parse_scalar): the file's units,
 * ranges and reasons. A change takes effect for new sessions at once on
 * every worker (a timeout at their next tick, within a second), show
 * settings shows it, and it is logged (event=setting_changed). Anything
 * else is refused, with the reason, in one line that begins "error:".
 *
 * Each live value is an atomic that the main thread writes and the workers
 * and directory threads read (relaxed: each is one value on its own), or
 * one of the limits' atomics (limits.h). Changes are not written back to
 * the file: a restart reads the file again.
 */
#ifndef FG_TUNE_H
#define FG_TUNE_H

#include "stats.h"

#include <stdio.h>

/* "set" and its arguments (args: "SETTING VALUE"); writes the one-line
 * answer to out. Without arguments, the usage and the settings it can
 * change. On the main thread, which alone writes the settings. */
void tune_command(const struct stats *st, const char *args, FILE *out);

#endif
