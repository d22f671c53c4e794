/* libFuzzer target: the IMAP command parser, fed in random-sized pieces. */
#include "../../proto/imap_parse.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct imap_parser p;
    char *buf = malloc(size ? size : 1);
    size_t off = 0;

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    imap_parser_init(&p, 512);
    /* The first byte picks the piece size, so resumption is exercised. */
    size_t step = size ? (size_t)(data[0] % 7) + 1 : 1;
    for (size_t avail = 0; off < size;) {
        avail = avail + step < size - off ? avail + step : size - off;
        int rc = imap_parse_command(&p, buf + off, avail);
        if (rc == IMAP_PARSE_AGAIN || rc == IMAP_PARSE_CONTINUE) {
            if (avail == size - off && rc == IMAP_PARSE_AGAIN)
                break;
            continue;
        }
        if (rc == IMAP_PARSE_DONE) {
            for (unsigned i = 0; i < p.nargs; i++)
                if (p.args[i].off + p.args[i].len > p.pos)
                    abort(); /* an argument outside its command */
        }
        if (rc == IMAP_PARSE_ERROR && imap_parse_fatal(&p))
            break;
        if (p.pos == 0 || p.pos > size - off)
            abort(); /* no progress, or consumed bytes that are not there */
        off += p.pos;
        avail = 0;
        if (data[off % size] & 1)
            imap_parser_reset(&p);
        else
            imap_parser_expect_line(&p);
    }
    free(buf);
    return 0;
}
