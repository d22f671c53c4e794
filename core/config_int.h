/*
 * The configuration reader's insides, shared by its three parts:
 *  - config.c       the INI reader and the key tables (and the settings dump
 *                   generated from them), and the checks that need nothing
 *                   but the file;
 *  - config_dir.c   the directory sections: [forest:NAME], [databases],
 *                   [database:NAME], the forests' order and domains;
 *  - config_load.c  start-up loading: certificates, password files, LDIF
 *                   files, and (CONFIG_NETWORK) host names and LDAP domain
 *                   discovery.
 * Not for use outside core/config*.c.
 */
#ifndef FG_CONFIG_INT_H
#define FG_CONFIG_INT_H

#include "config.h"

#include <stddef.h>

/* The fixed sections, then one slot per [forest:NAME] section and one per
 * database ([databases] line or [database:NAME] section). */
enum cfg_section {
    SEC_GLOBAL,
    SEC_IMAP,
    SEC_POP3,
    SEC_BACKEND,
    SEC_DIRECTORY,
    SEC_DATABASES,
    SEC_THROTTLE,
    SEC_FOREST,
    SEC_DATABASE = SEC_FOREST + DIR_MAX_FORESTS,
    SEC_COUNT = SEC_DATABASE + CFG_MAX_DATABASES,
    SEC_NONE = -1,
};

enum cfg_type {
    CT_UINT,
    CT_BOOL,
    CT_TIME,
    CT_STR,
    CT_BINDINGS,
    CT_ENUM,  /* one of the names of cfg_enums[min] */
    CT_CIDRS, /* struct cidrs: addresses and prefixes, comma-separated */
    CT_ADDRS, /* struct source_addrs: addresses without ports, comma- or space-separated */
    CT_SIZE,  /* uint64_t bytes: "10MB", "10 MB", "10485760", "Unlimited" (0); min, max (0: none) */
};

/* The settings that take one of a list of names. */
enum cfg_enum_kind {
    EN_LOGIN_TYPE,
    EN_LOGIN_MODE,
    EN_LOG_LEVEL,
    EN_BACKEND_TLS,
    EN_ROLE,
    EN_LDAP_TLS,
    EN_SEND_PROXY,
    EN_LOG_ROLL,
    EN_DELEGATE_CHECK,
};

/* Prints a key's effective value when it is not simply the field's (it is
 * derived: discovered domains, the search order). */
typedef void cfg_dump_fn(const struct fg_config *cfg, const void *base, FILE *out);

struct cfg_key {
    const char *name;
    uint8_t type;
    size_t off;  /* in the section's struct */
    size_t size; /* of the field */
    uint32_t min, max;
    cfg_dump_fn *dump; /* NULL: the field, by its type */
};

#define KEYD(n, t, st, f, lo, hi, d)                                                               \
    {                                                                                              \
        n, t, offsetof(st, f), sizeof(((st *)0)->f), lo, hi, d                                     \
    }
#define KEY(n, t, st, f, lo, hi) KEYD(n, t, st, f, lo, hi, NULL)

/* [database:NAME]'s keys: config_dir.c copies the ones a section sets. */
extern const struct cfg_key cfg_database_keys[];

#define CFG_MAX_KEYS 24

struct cfg_parse {
    struct fg_config *cfg;
    FILE *fp, *err;
    int errors;
    unsigned line;
    unsigned section_line[SEC_COUNT];
    unsigned key_line[SEC_COUNT][CFG_MAX_KEYS]; /* 0: not set */
    unsigned bad_lines[32];                     /* lines with an error: later checks skip them */
    unsigned nbad;
    unsigned db_line[CFG_MAX_DATABASES];
    unsigned flags;                        /* enum config_flags: what to load */
    struct dir_forest df[DIR_MAX_FORESTS]; /* as configured, before ordering */
};

/* "file:line: reason", counted; the line's later checks are skipped. */
void cfg_error(struct cfg_parse *cp, unsigned line, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* "file:line: warning: msg", not counted. */
void cfg_warn(struct cfg_parse *cp, unsigned line, const char *msg);

/* A key whose value was refused: checks that depend on it would only add noise. */
bool cfg_line_bad(const struct cfg_parse *cp, unsigned line);

/* The line a key was set on, or 0. */
unsigned cfg_key_line(const struct cfg_parse *cp, int sec, const char *name);

/* Exchange's backend ports for a protocol and a backend Tls mode. */
uint16_t cfg_default_port(int proto, uint8_t tls);

/* Strips white space at both ends, in place. */
char *cfg_trim(char *t);

/* config_dir.c: the INI reader's calls for the directory's sections. */
void cfg_database(struct cfg_parse *cp, const char *name, const char *value);
void cfg_new_database(struct cfg_parse *cp, const char *name);
void cfg_new_forest(struct cfg_parse *cp, const char *name);

/* config_dir.c: checks the directory's sections (nothing loaded yet), and
 * each database's TLS policy; then, after loading, the forests' domains and
 * their search order. */
void cfg_check_directory(struct cfg_parse *cp);
void cfg_database_policy(struct cfg_parse *cp, unsigned i);
void cfg_finish_directory(struct cfg_parse *cp);

/* config_dir.c: adds a domain to a forest, for Domains and for discovery. */
void cfg_add_domain(struct cfg_parse *cp, unsigned line, struct dir_forest *df, const char *nb,
                    const char *dns, const char *base);

/* config_load.c: loads what the checked settings name (cp->flags says what),
 * reporting problems at the lines that named them. */
void cfg_load(struct cfg_parse *cp);

#endif
