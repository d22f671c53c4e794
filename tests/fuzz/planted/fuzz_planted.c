/* libFuzzer target for the planted bug (planted_parse.c): must crash. */
#include "planted_parse.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    planted_parse((const char *)data, size);
    return 0;
}
