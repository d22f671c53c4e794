/* RFC 4515 filter escaping: see ldap_filter.h. */
#include "ldap_filter.h"

#include <stdbool.h>
#include <stdint.h>

size_t ldap_filter_escape(const void *v, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = v;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        bool esc = c < 0x21 || c > 0x7e || c == '*' || c == '(' || c == ')' || c == '\\';
        /* UTF-8 may pass as it is (RFC 4515), but escaping every byte beyond
         * ASCII costs nothing and leaves no byte a server could misread. */
        if (o + (esc ? 3 : 1) >= cap)
            return 0;
        if (esc) {
            out[o++] = '\\';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    if (o >= cap)
        return 0;
    out[o] = 0;
    return o;
}
