/*
 * Kerberos logons through MIT's GSSAPI: see krb.h.
 */
#include "krb.h"

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <krb5.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct krb_acceptor {
    krb5_context kctx;
    krb5_keytab kt; /* MEMORY:, a copy of the file's keys */
    char kt_name[64];
    /* One acceptor per protocol, named "imap" or "pop" without a host: it
     * holds the keys of that service's entries, for any host. (AD gives
     * every SPN of an account the same keys, so a key cannot tell imap/HOST
     * from pop/HOST: krb_accept reads the ticket's service name too.) The
     * directory threads share them: MIT locks a credential while it
     * accepts with it, and its replay cache file takes an OFD lock on each
     * open, which keeps threads apart as well as processes. */
    gss_cred_id_t cred[FG_PROTO_COUNT];
    unsigned services; /* 1 << fg_proto */
};

unsigned krb_services(const struct krb_acceptor *a)
{
    return a->services;
}

/* The service of a keytab entry (its first component), as a protocol bit. */
static unsigned krb_entry_service(krb5_context kctx, krb5_const_principal p)
{
    static const char *const service[FG_PROTO_COUNT] = {"imap", "pop"};
    unsigned bits = 0;
    (void)kctx; /* the macros below do not use it */
    if (krb5_princ_size(kctx, p) != 2)
        return 0;
    const krb5_data *c = krb5_princ_component(kctx, p, 0);
    for (int i = 0; i < FG_PROTO_COUNT; i++)
        if (c->length == strlen(service[i]) && strncasecmp(c->data, service[i], c->length) == 0)
            bits |= 1u << i;
    return bits;
}

static void krb_err(krb5_context kctx, krb5_error_code code, const char *what, char *err,
                    size_t errn)
{
    const char *m = krb5_get_error_message(kctx, code);
    snprintf(err, errn, "%s: %s", what, m);
    krb5_free_error_message(kctx, m);
}

/* Copies every key of the file into the memory keytab; counts them. */
static int krb_copy_keys(struct krb_acceptor *a, krb5_keytab src, unsigned *n, char *err,
                         size_t errn)
{
    krb5_kt_cursor cur;
    krb5_keytab_entry e;
    krb5_error_code rc = krb5_kt_start_seq_get(a->kctx, src, &cur);
    if (rc) {
        krb_err(a->kctx, rc, "cannot read the keytab", err, errn);
        return FG_ERROR;
    }
    while ((rc = krb5_kt_next_entry(a->kctx, src, &e, &cur)) == 0) {
        a->services |= krb_entry_service(a->kctx, e.principal);
        krb5_error_code arc = krb5_kt_add_entry(a->kctx, a->kt, &e);
        krb5_free_keytab_entry_contents(a->kctx, &e);
        if (arc) {
            krb5_kt_end_seq_get(a->kctx, src, &cur);
            krb_err(a->kctx, arc, "cannot copy the keytab", err, errn);
            return FG_ERROR;
        }
        (*n)++;
    }
    krb5_kt_end_seq_get(a->kctx, src, &cur);
    if (rc != KRB5_KT_END) {
        krb_err(a->kctx, rc, "cannot read the keytab", err, errn);
        return FG_ERROR;
    }
    return FG_OK;
}

static int krb_load(struct krb_acceptor *a, const char *keytab, char *err, size_t errn)
{
    static _Atomic unsigned serial;
    krb5_keytab src;
    unsigned n = 0;
    krb5_error_code rc = krb5_kt_resolve(a->kctx, keytab, &src);
    if (rc) {
        krb_err(a->kctx, rc, "cannot open the keytab", err, errn);
        return FG_ERROR;
    }
    snprintf(a->kt_name, sizeof a->kt_name, "MEMORY:forestgate-%u", atomic_fetch_add(&serial, 1));
    if ((rc = krb5_kt_resolve(a->kctx, a->kt_name, &a->kt))) {
        krb5_kt_close(a->kctx, src);
        krb_err(a->kctx, rc, "cannot make a keytab in memory", err, errn);
        return FG_ERROR;
    }
    int r = krb_copy_keys(a, src, &n, err, errn);
    krb5_kt_close(a->kctx, src);
    if (r == FG_OK && n == 0) {
        snprintf(err, errn, "the keytab holds no key");
        r = FG_ERROR;
    }
    return r;
}

/* The protocol's acceptor: any key of the keytab for service/ANYHOST. */
static int krb_acquire(struct krb_acceptor *a, enum fg_proto p, char *err, size_t errn)
{
    static const char *const service[FG_PROTO_COUNT] = {"imap", "pop"};
    OM_uint32 major, minor;
    gss_buffer_desc nb = {strlen(service[p]), (void *)service[p]};
    gss_name_t name = GSS_C_NO_NAME;
    gss_key_value_element_desc kv = {"keytab", a->kt_name};
    gss_key_value_set_desc store = {1, &kv};
    major = gss_import_name(&minor, &nb, GSS_C_NT_HOSTBASED_SERVICE, &name);
    if (!GSS_ERROR(major))
        major = gss_acquire_cred_from(&minor, name, GSS_C_INDEFINITE, GSS_C_NO_OID_SET,
                                      GSS_C_ACCEPT, &store, &a->cred[p], NULL, NULL);
    gss_release_name(&minor, &name);
    if (GSS_ERROR(major)) {
        snprintf(err, errn, "GSSAPI refuses the keytab's %s/ keys", service[p]);
        return FG_ERROR;
    }
    return FG_OK;
}

struct krb_acceptor *krb_open(const char *keytab, char *err, size_t errn)
{
    struct krb_acceptor *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errn, "out of memory");
        return NULL;
    }
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        a->cred[p] = GSS_C_NO_CREDENTIAL;
    krb5_error_code rc = krb5_init_context(&a->kctx);
    if (rc) {
        snprintf(err, errn, "cannot start Kerberos (krb5_init_context: %d)", (int)rc);
        free(a);
        return NULL;
    }
    if (krb_load(a, keytab, err, errn) != FG_OK)
        goto fail;
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if ((a->services & (1u << p)) && krb_acquire(a, (enum fg_proto)p, err, errn) != FG_OK)
            goto fail;
    return a;
fail:
    krb_close(a);
    return NULL;
}

void krb_close(struct krb_acceptor *a)
{
    OM_uint32 minor;
    if (!a)
        return;
    for (int p = 0; p < FG_PROTO_COUNT; p++)
        if (a->cred[p] != GSS_C_NO_CREDENTIAL)
            gss_release_cred(&minor, &a->cred[p]);
    if (a->kt)
        krb5_kt_close(a->kctx, a->kt);
    krb5_free_context(a->kctx);
    free(a);
}

struct krb_sess *krb_sess_new(void)
{
    struct krb_sess *ks = calloc(1, sizeof *ks);
    if (ks)
        ks->ctx = GSS_C_NO_CONTEXT;
    return ks;
}

static void krb_set_out(struct krb_sess *ks, const void *p, size_t n)
{
    free(ks->out);
    ks->out = NULL;
    ks->out_len = 0;
    if (n && (ks->out = malloc(n))) {
        memcpy(ks->out, p, n);
        ks->out_len = (uint32_t)n;
    }
}

void krb_sess_free(struct krb_sess *ks)
{
    OM_uint32 minor;
    if (!ks)
        return;
    gss_ctx_id_t ctx = ks->ctx;
    if (ctx != GSS_C_NO_CONTEXT)
        gss_delete_sec_context(&minor, &ctx, GSS_C_NO_BUFFER);
    krb_set_out(ks, NULL, 0);
    free(ks->offer);
    explicit_bzero(ks, sizeof *ks);
    free(ks);
}

/* GSSAPI's words for a failure, for the audit line (never a secret: the
 * mechanism's messages name principals and reasons, not keys). */
static enum krb_rc krb_fail(struct krb_sess *ks, const char *what, OM_uint32 major, OM_uint32 minor)
{
    OM_uint32 m2, ctx = 0;
    gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
    const char *text = "";
    int type = GSS_C_GSS_CODE;
    OM_uint32 code = major;
    if (minor) { /* the mechanism's reason says more than "Unspecified GSS failure" */
        type = GSS_C_MECH_CODE;
        code = minor;
    }
    if (major || minor) {
        gss_display_status(&m2, code, type, GSS_C_NO_OID, &ctx, &b);
        text = b.value ? b.value : "";
    }
    snprintf(ks->why, sizeof ks->why, "Kerberos: %s%s%.*s", what, text[0] ? ": " : "",
             (int)b.length, text);
    gss_release_buffer(&m2, &b);
    ks->phase = KP_DONE;
    return KRB_FAILED;
}

static enum krb_rc krb_fail_text(struct krb_sess *ks, const char *what)
{
    return krb_fail(ks, what, 0, 0);
}

/* Displays name into out (room for max + 1); false when it does not fit. */
static bool krb_display(gss_name_t name, char *out, size_t max, uint16_t *len)
{
    OM_uint32 minor;
    gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
    bool ok = !GSS_ERROR(gss_display_name(&minor, name, &b, NULL)) && b.length <= max &&
              !memchr(b.value, 0, b.length);
    if (ok) {
        memcpy(out, b.value, b.length);
        out[b.length] = 0;
        *len = (uint16_t)b.length;
    }
    gss_release_buffer(&minor, &b);
    return ok;
}

/* Security layer "none" only, with no buffer size (RFC 4752 section 3.1),
 * wrapped into ks->offer as soon as the context is made: the client's empty
 * answer to the AP-REP then needs no directory thread (krb_step_here). */
static enum krb_rc krb_wrap_offer(struct krb_sess *ks)
{
    OM_uint32 major, minor;
    static const uint8_t offer[4] = {0x01, 0, 0, 0};
    gss_buffer_desc in = {sizeof offer, (void *)offer}, out = GSS_C_EMPTY_BUFFER;
    major = gss_wrap(&minor, ks->ctx, 0, GSS_C_QOP_DEFAULT, &in, NULL, &out);
    if (GSS_ERROR(major))
        return krb_fail(ks, "cannot wrap the security layer offer", major, minor);
    free(ks->offer);
    ks->offer = out.length ? malloc(out.length) : NULL;
    if (ks->offer)
        memcpy(ks->offer, out.value, out.length);
    ks->offer_len = ks->offer ? (uint32_t)out.length : 0;
    gss_release_buffer(&minor, &out);
    return ks->offer ? KRB_CONTINUE : krb_fail_text(ks, "out of memory");
}

/* The offer becomes the next challenge. */
static enum krb_rc krb_send_offer(struct krb_sess *ks)
{
    free(ks->out);
    ks->out = ks->offer;
    ks->out_len = ks->offer_len;
    ks->offer = NULL;
    ks->offer_len = 0;
    ks->phase = KP_OFFER;
    return ks->out ? KRB_CONTINUE : krb_fail_text(ks, "the offer was not made");
}

bool krb_step_here(struct krb_sess *ks, size_t n)
{
    if (ks->phase != KP_AP_REP || n != 0 || !ks->offer)
        return false;
    krb_send_offer(ks);
    return true;
}

static enum krb_rc krb_accept(struct krb_acceptor *a, struct krb_sess *ks, enum fg_proto proto,
                              const uint8_t *in, size_t n)
{
    OM_uint32 major, minor, flags = 0;
    gss_buffer_desc tok = {n, (void *)in}, out = GSS_C_EMPTY_BUFFER;
    gss_name_t src = GSS_C_NO_NAME;
    gss_OID mech = GSS_C_NO_OID;
    gss_ctx_id_t ctx = ks->ctx;

    if (a->cred[proto] == GSS_C_NO_CREDENTIAL)
        return krb_fail_text(ks, "the keytab holds no key for this protocol's service");
    /* AD gives every SPN of an account the same keys, and MIT's acceptor
     * takes a ticket any key of the keytab opens: the ticket's own service
     * name is checked here, before it is decrypted. That name travels in
     * the clear, unprotected (RFC 4120 5.3), so this keeps honest clients
     * and configurations straight; it is no boundary between two services
     * of one account. Services of different accounts have different keys,
     * and the protocol's acceptor holds only its own. */
    char svc[64];
    size_t sn = krb_token_service(in, n, svc, sizeof svc - 1);
    svc[sn] = 0;
    if (sn == 0)
        return krb_fail_text(ks, "the client's token is no Kerberos AP-REQ");
    /* One component, the service itself: "imap/x" as a first component
     * (an escaped slash) is not imap. */
    if (!krb_service_ok(svc, sn, proto) || memchr(svc, '/', sn) || memchr(svc, '@', sn)) {
        snprintf(ks->why, sizeof ks->why, "Kerberos: the ticket is for the service %s/, not %s/",
                 svc, proto == FG_PROTO_IMAP ? "imap" : "pop");
        ks->phase = KP_DONE;
        return KRB_FAILED;
    }
    major = gss_accept_sec_context(&minor, &ctx, a->cred[proto], &tok, GSS_C_NO_CHANNEL_BINDINGS,
                                   &src, &mech, &out, &flags, NULL, NULL);
    OM_uint32 m2; /* the releases' own status must not hide the reason */
    ks->ctx = ctx;
    krb_set_out(ks, out.value, out.length);
    gss_release_buffer(&m2, &out);
    if (GSS_ERROR(major)) {
        gss_release_name(&m2, &src);
        return krb_fail(ks, "the ticket was refused", major, minor);
    }
    if (major & GSS_S_CONTINUE_NEEDED) {
        gss_release_name(&m2, &src);
        return ks->out ? KRB_CONTINUE : krb_fail_text(ks, "out of memory");
    }
    bool named = krb_display(src, ks->principal, CRED_NAME_MAX, &ks->principal_len);
    gss_release_name(&m2, &src);
    if (!named)
        return krb_fail_text(ks, "the client's principal name is too long");
    /* Integrity is what protects the offer and the answer: RFC 4752 needs it. */
    if (!(flags & GSS_C_INTEG_FLAG))
        return krb_fail_text(ks, "the context has no integrity protection");
    if (krb_wrap_offer(ks) != KRB_CONTINUE)
        return KRB_FAILED;
    if (ks->out_len) { /* mutual authentication: the AP-REP goes first */
        ks->phase = KP_AP_REP;
        return KRB_CONTINUE;
    }
    return krb_send_offer(ks);
}

/* The client's wrapped answer: layer "none", then the authorisation id. */
static enum krb_rc krb_answer(struct krb_sess *ks, const uint8_t *in, size_t n)
{
    OM_uint32 major, minor;
    gss_buffer_desc tok = {n, (void *)in}, out = GSS_C_EMPTY_BUFFER;
    major = gss_unwrap(&minor, ks->ctx, &tok, &out, NULL, NULL);
    if (GSS_ERROR(major))
        return krb_fail(ks, "the security layer answer does not unwrap", major, minor);
    const uint8_t *b = out.value;
    enum krb_rc rc = KRB_DONE;
    if (out.length < 4 || b[0] != 0x01) {
        rc = krb_fail_text(ks, "the client did not choose security layer \"none\"");
    } else {
        size_t len = krb_map_principal(ks->principal, ks->principal_len, (const char *)b + 4,
                                       out.length - 4, ks->name, &ks->enterprise);
        if (len == 0)
            rc = krb_fail_text(ks, "the principal or the authorization id names no account");
        ks->name_len = (uint16_t)len;
    }
    gss_release_buffer(&minor, &out);
    if (rc == KRB_DONE)
        ks->phase = KP_DONE;
    krb_set_out(ks, NULL, 0);
    return rc;
}

enum krb_rc krb_step(struct krb_acceptor *a, struct krb_sess *ks, enum fg_proto proto,
                     const uint8_t *in, size_t n)
{
    ks->why[0] = 0;
    switch (ks->phase) {
    case KP_ACCEPT:
        if (n == 0)
            return krb_fail_text(ks, "the client sent no token");
        return krb_accept(a, ks, proto, in, n);
    case KP_AP_REP:
        if (n != 0)
            return krb_fail_text(ks, "the client's answer to the AP-REP is not empty");
        return krb_send_offer(ks);
    case KP_OFFER:
        return krb_answer(ks, in, n);
    default:
        return krb_fail_text(ks, "the exchange is over");
    }
}
