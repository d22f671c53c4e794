/* The credential record: a bounded copy of what the client typed, wiped when freed. */
#include "cred.h"

#include <stdlib.h>
#include <string.h>

int cred_set(char *dst, uint16_t *len_r, size_t max, const char *src, size_t n)
{
    if (n > max || memchr(src, 0, n) != NULL)
        return FG_ERROR;
    memcpy(dst, src, n);
    dst[n] = 0;
    *len_r = (uint16_t)n;
    return FG_OK;
}

struct cred *cred_new(void)
{
    return calloc(1, sizeof(struct cred));
}

void cred_free(struct cred *c)
{
    if (!c)
        return;
    if (c->blob) {
        explicit_bzero(c->blob, c->blob_len);
        free(c->blob);
    }
    explicit_bzero(c, sizeof *c);
    free(c);
}
