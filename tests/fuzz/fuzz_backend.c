/* libFuzzer target: the backend login dialogues fed arbitrary server bytes,
 * with and without STARTTLS/STLS. */
#include "../../proto/backend.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct backend_login_params par = {.mode = (data[0] & 2) ? BACKEND_LOGIN_MASTER
                                                             : BACKEND_LOGIN_PASSTHROUGH,
                                       .user = "us er\xc3\xa4",
                                       .user_len = 8,
                                       .pass = "p\"a{3}\r\n",
                                       .pass_len = 9,
                                       .master_user = "m",
                                       .master_user_len = 1,
                                       .master_pass = "mp",
                                       .master_pass_len = 2,
                                       .forward = (data[0] & 4) != 0,
                                       .starttls = (data[0] & 0x80) != 0,
                                       .client_ip = "192.0.2.1",
                                       .local_ip = "192.0.2.2",
                                       .session_id = "fuzz",
                                       .client_port = 1,
                                       .local_port = 2,
                                       .ttl = 5};
    struct buf out = {0};
    struct backend_login bl;
    backend_login_init(&bl, (data[0] & 1) ? &pop3_backend_ops : &imap_backend_ops, &par, &out);
    size_t step = (size_t)(data[0] >> 3) % 17 + 1;
    for (size_t off = 1; off < size;) {
        size_t n = size - off < step ? size - off : step;
        buf_append(&bl.in, data + off, n);
        off += n;
        enum backend_login_result r = bl.ops->input(&bl);
        if (r == BACKEND_STARTTLS) {
            /* What followed the answer must be gone before the handshake. */
            if (buf_avail(&bl.in) != 0)
                abort();
            bl.ops->tls_done(&bl);
            continue;
        }
        if (r != BACKEND_AGAIN)
            break;
    }
    backend_login_free(&bl);
    buf_free(&out);
    return 0;
}
