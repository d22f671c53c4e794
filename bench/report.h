/* Results of a run: a table for a person, JSON for scripts. */
#ifndef FGB_REPORT_H
#define FGB_REPORT_H

#include <stdio.h>

#include "client.h"

void report_table(FILE *f, const struct fgb_opts *o, const struct fgb_result *r);
/* Writes the JSON to path ("-" = stdout); returns 0 or -1 (and says why on stderr). */
int report_json(const char *path, const struct fgb_opts *o, const struct fgb_result *r);

#endif
