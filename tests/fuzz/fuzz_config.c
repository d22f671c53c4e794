/*
 * libFuzzer target: the configuration reader (core/config*.c), from the INI
 * syntax through the key tables and every check that needs nothing but the
 * file. Nothing is loaded (no certificate, password or LDIF file, no host
 * name looked up): flags 0.
 *
 * The input is the file. Whatever it holds, the reader must end with a count
 * of errors and no crash, leak or overread. A file it accepts must survive a
 * round trip: the settings dump (show settings), read again, is accepted
 * and dumps the same text.
 */
#include "../../core/config.h"
#include "fuzz_util.h"

#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The bytes as a file the reader can open by name, without a disk. */
static int fz_file(const void *p, size_t n, char *path, size_t cap)
{
    int fd = memfd_create("fuzz.ini", MFD_CLOEXEC);
    if (fd < 0 || write(fd, p, n) != (ssize_t)n) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

/* Loads a file's bytes; returns the error count, or -1 without a file. */
static int fz_load(struct fg_config *cfg, const void *p, size_t n)
{
    char path[64];
    int fd = fz_file(p, n, path, sizeof path);
    if (fd < 0)
        return -1;
    FILE *err = fopen("/dev/null", "w");
    int errors = config_load(cfg, path, err, 0);
    fclose(err);
    close(fd);
    return errors;
}

static char *fz_dump(const struct fg_config *cfg, size_t *n)
{
    char *text = NULL;
    FILE *out = open_memstream(&text, n);
    config_dump(cfg, out);
    fclose(out);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fg_config cfg, again;
    if (size > 64 * 1024)
        return 0;
    int errors = fz_load(&cfg, data, size);
    if (errors < 0)
        return 0;
    if (errors == 0) {
        size_t n1, n2;
        char *d1 = fz_dump(&cfg, &n1);
        FZ_CHECK(fz_load(&again, d1, n1) == 0);
        char *d2 = fz_dump(&again, &n2);
        FZ_CHECK(n1 == n2 && memcmp(d1, d2, n1) == 0);
        free(d1);
        free(d2);
        config_free(&again);
    }
    config_free(&cfg);
    return 0;
}
