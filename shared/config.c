/* SPDX-License-Identifier: MIT */
/* halyard's configuration reader (format and contract in config.h).
 *
 * A Config holds one entry per key of the caller's ConfigKey table, sorted by
 * (section, name) so both loading and the getters use a binary search. The
 * file names entries and diags point to are interned in the Config. Values
 * are stored unquoted and checked for their declared type while loading; the
 * getters parse them again, which is cheap and keeps the entry a plain string.
 *
 * Limits (each one an error with file:line, never a silent truncation):
 * CONFIG_FILE_MAX bytes per file, CONFIG_LINE_MAX bytes per physical line,
 * CONFIG_ASSIGNMENTS_MAX Key=Value lines over all files, CONFIG_DROPINS_MAX
 * drop-ins. At most CONFIG_DIAGS_MAX diags are kept; the last one then says
 * that more were suppressed (and is an error if any suppressed one was). */

#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

#ifndef HALYARD_SYSCONFDIR
#define HALYARD_SYSCONFDIR "/etc"
#endif

#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_LINE_MAX 4096
#define CONFIG_ASSIGNMENTS_MAX 10000
#define CONFIG_KEYS_MAX 10000
#define CONFIG_DROPINS_MAX 256
#define CONFIG_DIAGS_MAX 1000
/* Untrusted text quoted in a diag is escaped and cut after this many bytes. */
#define EXCERPT_MAX 100

typedef struct ConfigEntry {
        char *section;
        char *name;
        ConfigType type;
        size_t index;      /* position in the caller's table, to keep the first of duplicates */
        char *value;       /* unquoted; NULL: not set */
        const char *file;  /* interned in Config.files */
        unsigned line;
} ConfigEntry;

struct Config {
        ConfigEntry *entries;
        size_t n_entries;

        char **files;
        size_t n_files;

        ConfigDiag *diags;
        size_t n_diags, n_diags_alloc;

        size_t n_assignments;
        bool failed;  /* an error was diagnosed (maybe suppressed) */
        bool stop;    /* a limit was hit: read nothing more */
};

static inline void config_freep(Config **c) {
        config_free(*c);
}

static inline void strv_freep(char ***l) {
        config_strv_free(*l);
}

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

/* ASCII only: config syntax must not depend on the locale. */
static bool is_ws(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_alpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char ascii_lower(char c) {
        return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

/* Compares p[0..n) with the NUL-terminated s. */
static bool mem_eq(const char *p, size_t n, const char *s, bool ignore_case) {
        size_t i;

        for (i = 0; i < n; i++) {
                if (s[i] == '\0')
                        return false;
                if (ignore_case ? ascii_lower(p[i]) != ascii_lower(s[i]) : p[i] != s[i])
                        return false;
        }
        return s[i] == '\0';
}

static void strip_n(const char **p, size_t *n) {
        while (*n > 0 && is_ws(**p)) {
                (*p)++;
                (*n)--;
        }
        while (*n > 0 && is_ws((*p)[*n - 1]))
                (*n)--;
}

/* Escapes p[0..n) for a message: quotes, backslashes and bytes outside
 * printable ASCII become escapes, and it is cut at EXCERPT_MAX bytes. */
typedef struct Excerpt {
        char s[EXCERPT_MAX * 4 + 4];
} Excerpt;

static const char *excerpt(Excerpt *e, const char *p, size_t n) {
        static const char hex[] = "0123456789abcdef";
        size_t k = 0;

        for (size_t i = 0; i < n && i < EXCERPT_MAX; i++) {
                unsigned char ch = (unsigned char) p[i];

                if (ch == '"' || ch == '\\') {
                        e->s[k++] = '\\';
                        e->s[k++] = (char) ch;
                } else if (ch < 0x20 || ch >= 0x7f) {
                        e->s[k++] = '\\';
                        e->s[k++] = 'x';
                        e->s[k++] = hex[ch >> 4];
                        e->s[k++] = hex[ch & 15];
                } else
                        e->s[k++] = (char) ch;
        }
        if (n > EXCERPT_MAX) {
                memcpy(e->s + k, "...", 3);
                k += 3;
        }
        e->s[k] = '\0';
        return e->s;
}

static const char *errno_text(int r, char *buf, size_t size) {
        return strerror_r(r < 0 ? -r : r, buf, size);
}

const char *config_default_path(void) {
        const char *e = getenv("HALYARD_CONFIG");

        if (e && *e)
                return e;
        return HALYARD_SYSCONFDIR "/halyard/halyard.conf";
}

static int entry_cmp(const void *a, const void *b) {
        const ConfigEntry *x = a, *y = b;
        int r;

        r = strcmp(x->section, y->section);
        if (r != 0)
                return r;
        r = strcmp(x->name, y->name);
        if (r != 0)
                return r;
        return x->index < y->index ? -1 : x->index > y->index;
}

static ConfigEntry *config_find(const Config *c, const char *section, const char *name) {
        size_t lo = 0, hi = c->n_entries;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                ConfigEntry *e = c->entries + mid;
                int r;

                r = strcmp(e->section, section);
                if (r == 0)
                        r = strcmp(e->name, name);
                if (r == 0)
                        return e;
                if (r < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static bool config_has_section(const Config *c, const char *section) {
        size_t lo = 0, hi = c->n_entries;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int r = strcmp(c->entries[mid].section, section);

                if (r == 0)
                        return true;
                if (r < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return false;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;

        for (size_t i = 0; i < c->n_entries; i++) {
                free(c->entries[i].section);
                free(c->entries[i].name);
                free(c->entries[i].value);
        }
        free(c->entries);
        for (size_t i = 0; i < c->n_files; i++)
                free(c->files[i]);
        free(c->files);
        for (size_t i = 0; i < c->n_diags; i++)
                free(c->diags[i].message);
        free(c->diags);
        free(c);
        return NULL;
}

static int config_new(const ConfigKey *keys, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        size_t n = 0, k = 0;

        if (!keys)
                return -EINVAL;
        for (; keys[n].name; n++) {
                if (n >= CONFIG_KEYS_MAX || !keys[n].section ||
                    (unsigned) keys[n].type > (unsigned) CONFIG_LIST_APPEND)
                        return -EINVAL;
        }

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->entries = calloc(n > 0 ? n : 1, sizeof *c->entries);
        if (!c->entries)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                ConfigEntry *e = c->entries + c->n_entries;

                e->section = strdup(keys[i].section);
                e->name = strdup(keys[i].name);
                c->n_entries++;
                if (!e->section || !e->name)
                        return -ENOMEM;
                e->type = keys[i].type;
                e->index = i;
        }

        /* Sorted for binary search; a key listed twice keeps its first type. */
        qsort(c->entries, c->n_entries, sizeof *c->entries, entry_cmp);
        for (size_t i = 0; i < c->n_entries; i++) {
                ConfigEntry *e = c->entries + i;

                if (k > 0 && streq_ptr(c->entries[k - 1].section, e->section) &&
                    streq_ptr(c->entries[k - 1].name, e->name)) {
                        free(e->section);
                        free(e->name);
                        continue;
                }
                c->entries[k++] = *e;
        }
        c->n_entries = k;

        *ret = TAKE_PTR(c);
        return 0;
}

/* Keeps a copy of name for the Config's lifetime and returns it. */
static int config_intern_file(Config *c, const char *name, const char **ret) {
        char **files, *copy;

        if (c->n_files > 0 && strcmp(c->files[c->n_files - 1], name) == 0) {
                *ret = c->files[c->n_files - 1];
                return 0;
        }

        files = realloc(c->files, (c->n_files + 1) * sizeof *files);
        if (!files)
                return -ENOMEM;
        c->files = files;
        copy = strdup(name);
        if (!copy)
                return -ENOMEM;
        c->files[c->n_files++] = copy;
        *ret = copy;
        return 0;
}

/* file must be interned. Returns 0 or -ENOMEM. */
_printf_(5, 6)
static int config_add_diag(Config *c, const char *file, unsigned line, bool error, const char *fmt, ...) {
        ConfigDiag *d;
        char *msg = NULL;
        va_list ap;
        int r;

        if (error)
                c->failed = true;

        if (c->n_diags >= CONFIG_DIAGS_MAX) {
                /* The last diag stands for the suppressed ones. */
                if (error)
                        c->diags[c->n_diags - 1].error = true;
                return 0;
        }

        if (c->n_diags == c->n_diags_alloc) {
                size_t n = c->n_diags_alloc ? c->n_diags_alloc * 2 : 8;

                d = realloc(c->diags, n * sizeof *d);
                if (!d)
                        return -ENOMEM;
                c->diags = d;
                c->n_diags_alloc = n;
        }

        if (c->n_diags == CONFIG_DIAGS_MAX - 1)
                r = asprintf(&msg, "too many problems, not reporting more");
        else {
                va_start(ap, fmt);
                r = vasprintf(&msg, fmt, ap);
                va_end(ap);
        }
        if (r < 0)
                return -ENOMEM;

        c->diags[c->n_diags++] = (ConfigDiag) {
                .file = (char *) file,
                .line = line,
                .error = error,
                .message = msg,
        };
        return 0;
}

/* Records an I/O failure on a whole file (line 0) and returns r, or -ENOMEM. */
static int config_io_error(Config *c, const char *name, int r) {
        const char *file;
        char buf[128];
        int q;

        if (r == -ENOMEM)
                return r;
        q = config_intern_file(c, name, &file);
        if (q < 0)
                return q;
        q = config_add_diag(c, file, 0, true, "failed to read: %s", errno_text(r, buf, sizeof buf));
        if (q < 0)
                return q;
        c->stop = true;
        return r;
}

int config_parse_bool(const char *s, bool *ret) {
        static const struct {
                const char *word;
                bool value;
        } table[] = {
                { "yes", true },   { "no", false },
                { "true", true },  { "false", false },
                { "on", true },    { "off", false },
                { "1", true },     { "0", false },
        };
        size_t n;

        if (!s || !ret)
                return -EINVAL;
        n = strlen(s);
        strip_n(&s, &n);
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (mem_eq(s, n, table[i].word, true)) {
                        *ret = table[i].value;
                        return 0;
                }
        return -EINVAL;
}

/* Exactly the decimal digits p[0..n), n > 0. Syntax errors win over overflow. */
static int parse_u64_n(const char *p, size_t n, uint64_t *ret) {
        uint64_t v = 0;
        bool overflow = false;

        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                unsigned d;

                if (!is_digit(p[i]))
                        return -EINVAL;
                d = (unsigned) (p[i] - '0');
                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        v = v * 10 + d;
        }
        if (overflow)
                return -ERANGE;
        *ret = v;
        return 0;
}

static int config_parse_uint(const char *s, uint64_t *ret) {
        size_t n = strlen(s);

        strip_n(&s, &n);
        return parse_u64_n(s, n, ret);
}

int config_parse_size(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } table[] = {
                { "", 1 }, { "b", 1 },
                { "k", UINT64_C(1) << 10 }, { "kb", UINT64_C(1) << 10 }, { "kib", UINT64_C(1) << 10 },
                { "m", UINT64_C(1) << 20 }, { "mb", UINT64_C(1) << 20 }, { "mib", UINT64_C(1) << 20 },
                { "g", UINT64_C(1) << 30 }, { "gb", UINT64_C(1) << 30 }, { "gib", UINT64_C(1) << 30 },
                { "t", UINT64_C(1) << 40 }, { "tb", UINT64_C(1) << 40 }, { "tib", UINT64_C(1) << 40 },
        };
        size_t n, i = 0, digits, suffix_start;
        uint64_t v, factor = 0;
        int r;

        if (!s || !ret)
                return -EINVAL;
        n = strlen(s);
        strip_n(&s, &n);

        while (i < n && is_digit(s[i]))
                i++;
        digits = i;
        while (i < n && is_ws(s[i]))
                i++;
        suffix_start = i;
        while (i < n && is_alpha(s[i]))
                i++;
        if (digits == 0 || i != n)
                return -EINVAL;
        for (size_t j = 0; j < ELEMENTSOF(table); j++)
                if (mem_eq(s + suffix_start, n - suffix_start, table[j].suffix, true)) {
                        factor = table[j].factor;
                        break;
                }
        if (factor == 0)
                return -EINVAL;

        r = parse_u64_n(s, digits, &v);
        if (r < 0)
                return r;
        if (v > UINT64_MAX / factor)
                return -ERANGE;
        *ret = v * factor;
        return 0;
}

#define USEC_PER_SEC UINT64_C(1000000)

int config_parse_duration(const char *s, uint64_t *ret_usec) {
        /* systemd's spellings; case-sensitive like systemd ("m" is minutes). */
        static const struct {
                const char *unit;
                uint64_t usec;
        } table[] = {
                { "us", 1 }, { "usec", 1 },
                { "ms", 1000 }, { "msec", 1000 },
                { "", USEC_PER_SEC }, { "s", USEC_PER_SEC }, { "sec", USEC_PER_SEC },
                { "second", USEC_PER_SEC }, { "seconds", USEC_PER_SEC },
                { "m", 60 * USEC_PER_SEC }, { "min", 60 * USEC_PER_SEC },
                { "minute", 60 * USEC_PER_SEC }, { "minutes", 60 * USEC_PER_SEC },
                { "h", 3600 * USEC_PER_SEC }, { "hr", 3600 * USEC_PER_SEC },
                { "hour", 3600 * USEC_PER_SEC }, { "hours", 3600 * USEC_PER_SEC },
                { "d", 86400 * USEC_PER_SEC }, { "day", 86400 * USEC_PER_SEC },
                { "days", 86400 * USEC_PER_SEC },
                { "w", 604800 * USEC_PER_SEC }, { "week", 604800 * USEC_PER_SEC },
                { "weeks", 604800 * USEC_PER_SEC },
        };
        uint64_t total = 0;
        bool overflow = false;
        size_t n, i = 0;

        if (!s || !ret_usec)
                return -EINVAL;
        n = strlen(s);
        strip_n(&s, &n);
        if (n == 0)
                return -EINVAL;

        /* One or more "<number>[ ]<unit>", optionally separated by whitespace. */
        while (i < n) {
                size_t start = i, unit_start;
                uint64_t v = 0, factor = 0;
                int r;

                while (i < n && is_digit(s[i]))
                        i++;
                r = parse_u64_n(s + start, i - start, &v);
                if (r == -EINVAL)
                        return r;
                if (r < 0)
                        overflow = true;
                while (i < n && is_ws(s[i]))
                        i++;
                unit_start = i;
                while (i < n && is_alpha(s[i]))
                        i++;
                for (size_t j = 0; j < ELEMENTSOF(table); j++)
                        if (mem_eq(s + unit_start, i - unit_start, table[j].unit, false)) {
                                factor = table[j].usec;
                                break;
                        }
                if (factor == 0)
                        return -EINVAL;
                while (i < n && is_ws(s[i]))
                        i++;

                if (overflow || v > UINT64_MAX / factor || total > UINT64_MAX - v * factor)
                        overflow = true;
                else
                        total += v * factor;
        }
        if (overflow)
                return -ERANGE;
        *ret_usec = total;
        return 0;
}

/* An address or prefix in p[0..n), no surrounding whitespace. */
static int parse_address_n(const char *p, size_t n, ConfigAddress *ret) {
        char buf[INET6_ADDRSTRLEN];
        ConfigAddress a = {};
        const char *slash;
        size_t alen;

        slash = memchr(p, '/', n);
        alen = slash ? (size_t) (slash - p) : n;
        if (alen == 0 || alen >= sizeof buf)
                return -EINVAL;
        memcpy(buf, p, alen);
        buf[alen] = '\0';

        if (memchr(buf, ':', alen)) {
                a.family = AF_INET6;
                a.prefixlen = 128;
        } else {
                a.family = AF_INET;
                a.prefixlen = 32;
        }
        if (inet_pton(a.family, buf, a.addr) != 1)
                return -EINVAL;

        if (slash) {
                const char *q = slash + 1;
                size_t qn = n - alen - 1;
                uint64_t v;

                /* At most 3 digits keeps "/0000000000000000000032" out. */
                if (qn == 0 || qn > 3 || parse_u64_n(q, qn, &v) < 0 || v > a.prefixlen)
                        return -EINVAL;
                a.prefixlen = (unsigned) v;
        }

        *ret = a;
        return 0;
}

int config_parse_address(const char *s, ConfigAddress *ret) {
        size_t n;

        if (!s || !ret)
                return -EINVAL;
        n = strlen(s);
        strip_n(&s, &n);
        return parse_address_n(s, n, ret);
}

static bool is_address_sep(char c) {
        return is_ws(c) || c == ',';
}

/* Next token of s at *pos separated by whitespace (and commas if commas);
 * returns false at the end. */
static bool next_token(const char *s, size_t *pos, bool commas, const char **ret, size_t *ret_n) {
        size_t i = *pos, start;

        while (s[i] && (commas ? is_address_sep(s[i]) : is_ws(s[i])))
                i++;
        if (!s[i]) {
                *pos = i;
                return false;
        }
        start = i;
        while (s[i] && !(commas ? is_address_sep(s[i]) : is_ws(s[i])))
                i++;
        *ret = s + start;
        *ret_n = i - start;
        *pos = i;
        return true;
}

bool config_address_match(const ConfigAddress *prefix, const struct sockaddr *sa) {
        static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        uint8_t buf[16];
        const uint8_t *addr;
        unsigned full, rest;

        if (!prefix || !sa)
                return false;

        if (prefix->family == AF_INET) {
                if (prefix->prefixlen > 32)
                        return false;
                if (sa->sa_family == AF_INET)
                        addr = (const uint8_t *) &((const struct sockaddr_in *) sa)->sin_addr;
                else if (sa->sa_family == AF_INET6) {
                        const uint8_t *a6 = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;

                        if (memcmp(a6, v4mapped, sizeof v4mapped) != 0)
                                return false;
                        addr = a6 + 12;
                } else
                        return false;
        } else if (prefix->family == AF_INET6) {
                if (prefix->prefixlen > 128)
                        return false;
                if (sa->sa_family == AF_INET6)
                        addr = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
                else if (sa->sa_family == AF_INET) {
                        /* An IPv4 peer matches ::ffff:0:0/96 style prefixes. */
                        memcpy(buf, v4mapped, sizeof v4mapped);
                        memcpy(buf + 12, &((const struct sockaddr_in *) sa)->sin_addr, 4);
                        addr = buf;
                } else
                        return false;
        } else
                return false;

        full = prefix->prefixlen / 8;
        rest = prefix->prefixlen % 8;
        if (memcmp(addr, prefix->addr, full) != 0)
                return false;
        if (rest > 0) {
                uint8_t mask = (uint8_t) (0xff00u >> rest);

                if ((addr[full] & mask) != (prefix->addr[full] & mask))
                        return false;
        }
        return true;
}

static const char *type_name(ConfigType t) {
        switch (t) {
        case CONFIG_BOOL:
                return "boolean";
        case CONFIG_UINT:
                return "number";
        case CONFIG_SIZE:
                return "size";
        case CONFIG_DURATION:
                return "duration";
        case CONFIG_ADDRESSES:
                return "address";
        default:
                return "value";
        }
}

static const char *type_hint(ConfigType t) {
        switch (t) {
        case CONFIG_BOOL:
                return "expected yes/no, true/false, on/off or 1/0";
        case CONFIG_UINT:
                return "expected a decimal number";
        case CONFIG_SIZE:
                return "expected a number with an optional suffix B, K, M, G or T";
        case CONFIG_DURATION:
                return "expected a time span like 30s, 5min or 1h 30min";
        case CONFIG_ADDRESSES:
                return "expected an IPv4 or IPv6 address with an optional /prefix";
        default:
                return "malformed";
        }
}

/* Checks v for e's type. Returns 0 if valid, 1 after recording an error,
 * -ENOMEM. */
static int config_check_value(Config *c, const char *file, unsigned line, const ConfigEntry *e, const char *v) {
        const char *bad = v;
        size_t bad_n = strlen(v);
        uint64_t u;
        bool b;
        Excerpt ex;
        int r = 0;

        switch (e->type) {
        case CONFIG_BOOL:
                r = config_parse_bool(v, &b);
                break;
        case CONFIG_UINT:
                r = config_parse_uint(v, &u);
                break;
        case CONFIG_SIZE:
                r = config_parse_size(v, &u);
                break;
        case CONFIG_DURATION:
                r = config_parse_duration(v, &u);
                break;
        case CONFIG_ADDRESSES: {
                ConfigAddress a;
                size_t pos = 0;

                while (next_token(v, &pos, true, &bad, &bad_n)) {
                        r = parse_address_n(bad, bad_n, &a);
                        if (r < 0)
                                break;
                }
                break;
        }
        case CONFIG_STRING:
        case CONFIG_LIST:
        case CONFIG_LIST_APPEND:
                break;
        }
        if (r >= 0)
                return 0;

        r = config_add_diag(c, file, line, true, "invalid %s \"%s\" for %s=: %s",
                            type_name(e->type), excerpt(&ex, bad, bad_n), e->name,
                            r == -ERANGE ? "value out of range" : type_hint(e->type));
        return r < 0 ? r : 1;
}

/* Removes "..." around a value (\" and \\ are escapes inside); v is
 * trimmed. Returns 0, -EINVAL with *reterr set, or -ENOMEM. */
static int value_unquote(const char *v, char **ret, const char **reterr) {
        size_t n = strlen(v), i, k = 0;
        char *out;

        if (v[0] != '"') {
                out = strdup(v);
                if (!out)
                        return -ENOMEM;
                *ret = out;
                return 0;
        }

        out = malloc(n);
        if (!out)
                return -ENOMEM;
        for (i = 1; i < n; i++) {
                if (v[i] == '\\' && i + 1 < n && (v[i + 1] == '"' || v[i + 1] == '\\'))
                        out[k++] = v[++i];
                else if (v[i] == '"')
                        break;
                else
                        out[k++] = v[i];
        }
        if (i >= n) {
                free(out);
                *reterr = "unterminated quoted value";
                return -EINVAL;
        }
        if (i + 1 != n) {
                free(out);
                *reterr = "text after the closing quote";
                return -EINVAL;
        }
        out[k] = '\0';
        *ret = out;
        return 0;
}

typedef enum SectionState {
        SECTION_NONE,     /* before the first header */
        SECTION_KNOWN,
        SECTION_UNKNOWN,  /* warned about at its header */
        SECTION_BAD,      /* malformed header, diagnosed */
} SectionState;

typedef struct Parser {
        Config *c;
        const char *file;  /* interned */
        char *section;
        SectionState state;
} Parser;

static int parse_section_header(Parser *p, char *s, size_t n, unsigned line) {
        bool ok = n >= 3 && s[n - 1] == ']';
        Excerpt ex;

        free(p->section);
        p->section = NULL;

        for (size_t i = 1; ok && i + 1 < n; i++) {
                unsigned char ch = (unsigned char) s[i];

                if (ch <= ' ' || ch == 0x7f || ch == '[' || ch == ']')
                        ok = false;
        }
        if (!ok) {
                p->state = SECTION_BAD;
                return config_add_diag(p->c, p->file, line, true, "malformed section header \"%s\"",
                                       excerpt(&ex, s, n));
        }

        p->section = strndup(s + 1, n - 2);
        if (!p->section)
                return -ENOMEM;
        if (config_has_section(p->c, p->section)) {
                p->state = SECTION_KNOWN;
                return 0;
        }
        p->state = SECTION_UNKNOWN;
        return config_add_diag(p->c, p->file, line, false, "unknown section [%s], ignoring",
                               excerpt(&ex, p->section, n - 2));
}

/* l is one logical line (continuations joined), NUL-terminated, no NUL inside. */
static int parse_line(Parser *p, char *l, unsigned line) {
        Config *c = p->c;
        _cleanup_free_ char *v = NULL;
        const char *s = l, *err = NULL;
        char *eq, *key, *value;
        size_t n = strlen(l), kn;
        ConfigEntry *e;
        Excerpt ex;
        int r;

        strip_n(&s, &n);
        if (n == 0)
                return 0;
        key = (char *) s;
        key[n] = '\0';

        if (key[0] == '[')
                return parse_section_header(p, key, n, line);

        eq = strchr(key, '=');
        if (!eq)
                return config_add_diag(c, p->file, line, true, "missing '=' in \"%s\"", excerpt(&ex, key, n));
        kn = (size_t) (eq - key);
        while (kn > 0 && is_ws(key[kn - 1]))
                kn--;
        if (kn == 0)
                return config_add_diag(c, p->file, line, true, "empty key name");
        key[kn] = '\0';
        value = eq + 1;
        while (is_ws(*value))
                value++;

        if (p->state == SECTION_NONE)
                return config_add_diag(c, p->file, line, true, "key \"%s\" outside of a [Section]",
                                       excerpt(&ex, key, kn));

        if (++c->n_assignments > CONFIG_ASSIGNMENTS_MAX) {
                c->stop = true;
                return config_add_diag(c, p->file, line, true,
                                       "too many assignments (limit %d), ignoring the rest",
                                       CONFIG_ASSIGNMENTS_MAX);
        }

        if (p->state != SECTION_KNOWN)
                return 0;

        e = config_find(c, p->section, key);
        if (!e)
                return config_add_diag(c, p->file, line, false, "unknown key \"%s\" in section [%s], ignoring",
                                       excerpt(&ex, key, kn), p->section);

        if (*value == '\0') {
                /* "Key=" resets to unset, like systemd. */
                free(e->value);
                e->value = NULL;
                e->file = NULL;
                e->line = 0;
                return 0;
        }

        r = value_unquote(value, &v, &err);
        if (r == -EINVAL)
                return config_add_diag(c, p->file, line, true, "%s for %s=", err, e->name);
        if (r < 0)
                return r;

        r = config_check_value(c, p->file, line, e, v);
        if (r != 0)
                return r < 0 ? r : 0;

        if (e->type == CONFIG_LIST_APPEND && e->value) {
                char *joined = NULL;
                if (asprintf(&joined, "%s, %s", e->value, v) < 0)
                        return -ENOMEM;
                free(v);
                v = joined;
        }
        free(e->value);
        e->value = TAKE_PTR(v);
        e->file = p->file;
        e->line = line;
        return 0;
}

static int buf_append(char **buf, size_t *len, size_t *alloc, const char *p, size_t n) {
        if (*len + n + 1 > *alloc) {
                size_t a = MAX(*alloc * 2, *len + n + 1);
                char *b = realloc(*buf, a);

                if (!b)
                        return -ENOMEM;
                *buf = b;
                *alloc = a;
        }
        memcpy(*buf + *len, p, n);
        *len += n;
        (*buf)[*len] = '\0';
        return 0;
}

/* Parses text as the file named file (interned). Returns 0 or -ENOMEM;
 * everything else becomes a diag. */
static int config_parse_text(Config *c, const char *file, const char *text, size_t len) {
        _cleanup_free_ char *buf = NULL;
        size_t buf_len = 0, buf_alloc = 0, pos = 0;
        unsigned line = 0, start_line = 0;
        bool continued = false;
        Parser p = { .c = c, .file = file };
        int r = 0;

        if (len > CONFIG_FILE_MAX) {
                /* Point at the line where the limit is crossed. */
                line = 1;
                for (size_t i = 0; i < CONFIG_FILE_MAX; i++)
                        if (text[i] == '\n')
                                line++;
                return config_add_diag(c, file, line, true, "file is larger than 1 MiB, ignoring it");
        }

        /* Like systemd, ignore a UTF-8 byte order mark some editors write. */
        if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
                pos = 3;

        while (pos < len && !c->stop) {
                const char *l = text + pos, *eol;
                size_t n, k = 0, backslashes = 0;

                eol = memchr(l, '\n', len - pos);
                n = eol ? (size_t) (eol - l) : len - pos;
                pos += n + (eol ? 1 : 0);
                line++;
                if (n > 0 && l[n - 1] == '\r')
                        n--;

                if (memchr(l, '\0', n) || n > CONFIG_LINE_MAX) {
                        continued = false;
                        r = config_add_diag(c, file, line, true, n > CONFIG_LINE_MAX ?
                                            "line too long (more than 4096 bytes)" :
                                            "line contains a NUL byte");
                        if (r < 0)
                                break;
                        continue;
                }

                /* Comments never continue, and are skipped inside a continuation. */
                while (k < n && is_ws(l[k]))
                        k++;
                if (k < n && (l[k] == '#' || l[k] == ';'))
                        continue;

                if (!continued) {
                        start_line = line;
                        buf_len = 0;
                }
                while (backslashes < n && l[n - 1 - backslashes] == '\\')
                        backslashes++;
                continued = backslashes % 2 == 1;
                r = buf_append(&buf, &buf_len, &buf_alloc, l, continued ? n - 1 : n);
                if (r >= 0 && continued)
                        r = buf_append(&buf, &buf_len, &buf_alloc, " ", 1);
                if (r >= 0 && !continued)
                        r = parse_line(&p, buf, start_line);
                if (r < 0)
                        break;
        }
        /* A backslash on the last line continues into nothing. */
        if (r >= 0 && continued && !c->stop)
                r = parse_line(&p, buf, start_line);

        free(p.section);
        return r;
}

/* Reads at most CONFIG_FILE_MAX + 1 bytes: more means too large. */
static int read_limited(int fd, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, alloc = 0;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        alloc = st.st_size > 0 && (uint64_t) st.st_size < CONFIG_FILE_MAX ? (size_t) st.st_size + 1 : 4096;

        for (;;) {
                ssize_t k;

                if (len == alloc || !buf) {
                        size_t a = buf ? MIN(alloc * 2, (size_t) CONFIG_FILE_MAX + 1) : alloc;
                        char *b = realloc(buf, a);

                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        alloc = a;
                }
                if (len == (size_t) CONFIG_FILE_MAX + 1)
                        break;
                k = read(fd, buf + len, alloc - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break;
                len += (size_t) k;
        }

        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* Loads name (relative to dir_fd), shown as display. Missing files and
 * files that are not regular are skipped. Returns 0, -ENOMEM, or another
 * -errno after recording it as a diag. */
static int config_load_file(Config *c, int dir_fd, const char *name, const char *display) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *text = NULL;
        const char *file;
        struct stat st;
        size_t len = 0;
        int r;

        /* stat first: opening a device or FIFO could block or have side effects. */
        if (fstatat(dir_fd, name, &st, 0) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return 0;
                return config_io_error(c, display, negative_errno());
        }
        if (!S_ISREG(st.st_mode))
                return 0;

        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                return config_io_error(c, display, negative_errno());
        }
        if (fstat(fd, &st) < 0)
                return config_io_error(c, display, negative_errno());
        if (!S_ISREG(st.st_mode))
                return 0;

        r = read_limited(fd, &text, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return config_io_error(c, display, r);

        r = config_intern_file(c, display, &file);
        if (r < 0)
                return r;
        return config_parse_text(c, file, text, len);
}

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static bool is_dropin_name(const char *name) {
        size_t n = strlen(name);

        return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".conf") == 0;
}

static int config_load_dropins(Config *c, const char *path) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_(strv_freep) char **names = NULL;
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int fd = -1;
        size_t n = 0;
        struct dirent *de;
        int r;

        if (asprintf(&dir, "%s.d", path) < 0)
                return -ENOMEM;

        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return 0;
                return config_io_error(c, dir, negative_errno());
        }
        d = fdopendir(fd);
        if (!d)
                return config_io_error(c, dir, negative_errno());
        fd = -1; /* owned by d now */

        names = calloc(1, sizeof *names);
        if (!names)
                return -ENOMEM;
        for (;;) {
                char **l;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return config_io_error(c, dir, negative_errno());
                        break;
                }
                if (!is_dropin_name(de->d_name))
                        continue;
                if (n >= CONFIG_DROPINS_MAX) {
                        const char *file;

                        r = config_intern_file(c, dir, &file);
                        if (r < 0)
                                return r;
                        c->stop = true;
                        return config_add_diag(c, file, 0, true, "too many drop-in files (limit %d)",
                                               CONFIG_DROPINS_MAX);
                }
                l = realloc(names, (n + 2) * sizeof *names);
                if (!l)
                        return -ENOMEM;
                names = l;
                names[n] = strdup(de->d_name);
                if (!names[n])
                        return -ENOMEM;
                names[++n] = NULL;
        }

        qsort(names, n, sizeof *names, strcmp_ptr);
        for (size_t i = 0; i < n && !c->stop; i++) {
                _cleanup_free_ char *display = NULL;

                if (asprintf(&display, "%s/%s", dir, names[i]) < 0)
                        return -ENOMEM;
                r = config_load_file(c, dirfd(d), names[i], display);
                if (r < 0)
                        return r;
        }
        return 0;
}

int config_load(const char *path, const ConfigKey *keys, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        int r;

        if (!path || !ret)
                return -EINVAL;
        *ret = NULL;

        r = config_new(keys, &c);
        if (r < 0)
                return r;

        r = config_load_file(c, AT_FDCWD, path, path);
        if (r >= 0 && !c->stop)
                r = config_load_dropins(c, path);
        if (r == -ENOMEM)
                return r;

        *ret = TAKE_PTR(c);
        if (r < 0)
                return r;
        return (*ret)->failed ? -EINVAL : 0;
}

int config_load_string(const char *name, const char *text, size_t len, const ConfigKey *keys, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        const char *file;
        int r;

        if (!name || (!text && len > 0) || !ret)
                return -EINVAL;
        *ret = NULL;

        r = config_new(keys, &c);
        if (r < 0)
                return r;
        r = config_intern_file(c, name, &file);
        if (r < 0)
                return r;
        r = config_parse_text(c, file, text ? text : "", len);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return (*ret)->failed ? -EINVAL : 0;
}

size_t config_n_diags(const Config *c) {
        return c ? c->n_diags : 0;
}

const ConfigDiag *config_diag(const Config *c, size_t i) {
        if (!c || i >= c->n_diags)
                return NULL;
        return c->diags + i;
}

void config_print_diags(const Config *c, FILE *f) {
        if (!c || !f)
                return;
        for (size_t i = 0; i < c->n_diags; i++) {
                const ConfigDiag *d = c->diags + i;

                if (d->line > 0)
                        fprintf(f, "%s:%u: %s: %s\n", d->file, d->line, d->error ? "error" : "warning", d->message);
                else
                        fprintf(f, "%s: %s: %s\n", d->file, d->error ? "error" : "warning", d->message);
        }
}

static int config_lookup(const Config *c, const char *section, const char *name, const ConfigEntry **ret) {
        const ConfigEntry *e;

        if (!c || !section || !name)
                return -EINVAL;
        e = config_find(c, section, name);
        if (!e || !e->value)
                return -ENOENT;
        *ret = e;
        return 0;
}

int config_get_string(const Config *c, const char *section, const char *name, const char **ret) {
        const ConfigEntry *e;
        int r;

        if (!ret)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;
        *ret = e->value;
        return 0;
}

int config_get_bool(const Config *c, const char *section, const char *name, bool *ret) {
        const ConfigEntry *e;
        int r;

        if (!ret)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;
        return config_parse_bool(e->value, ret);
}

int config_get_uint(const Config *c, const char *section, const char *name, uint64_t *ret) {
        const ConfigEntry *e;
        int r;

        if (!ret)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;
        return config_parse_uint(e->value, ret);
}

int config_get_size(const Config *c, const char *section, const char *name, uint64_t *ret) {
        const ConfigEntry *e;
        int r;

        if (!ret)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;
        return config_parse_size(e->value, ret);
}

int config_get_duration(const Config *c, const char *section, const char *name, uint64_t *ret_usec) {
        const ConfigEntry *e;
        int r;

        if (!ret_usec)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;
        return config_parse_duration(e->value, ret_usec);
}

int config_get_addresses(const Config *c, const char *section, const char *name, ConfigAddress **ret, size_t *ret_n) {
        _cleanup_free_ ConfigAddress *a = NULL;
        const ConfigEntry *e;
        const char *tok;
        size_t pos = 0, n = 0, tok_n;
        int r;

        if (!ret || !ret_n)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;

        while (next_token(e->value, &pos, true, &tok, &tok_n))
                n++;
        /* Never NULL on success, even for an empty list. */
        a = calloc(n > 0 ? n : 1, sizeof *a);
        if (!a)
                return -ENOMEM;
        pos = 0;
        for (size_t i = 0; i < n; i++) {
                next_token(e->value, &pos, true, &tok, &tok_n);
                r = parse_address_n(tok, tok_n, a + i);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(a);
        *ret_n = n;
        return 0;
}

int config_get_list(const Config *c, const char *section, const char *name, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        const ConfigEntry *e;
        const char *tok;
        size_t pos = 0, n = 0, tok_n;
        int r;

        if (!ret)
                return -EINVAL;
        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;

        while (next_token(e->value, &pos, false, &tok, &tok_n))
                n++;
        l = calloc(n + 1, sizeof *l);
        if (!l)
                return -ENOMEM;
        pos = 0;
        for (size_t i = 0; i < n; i++) {
                next_token(e->value, &pos, false, &tok, &tok_n);
                l[i] = strndup(tok, tok_n);
                if (!l[i])
                        return -ENOMEM;
        }

        *ret = TAKE_PTR(l);
        return 0;
}

char **config_strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
        return NULL;
}

int config_get_location(const Config *c, const char *section, const char *name, const char **ret_file, unsigned *ret_line) {
        const ConfigEntry *e;
        int r;

        r = config_lookup(c, section, name, &e);
        if (r < 0)
                return r;
        if (ret_file)
                *ret_file = e->file;
        if (ret_line)
                *ret_line = e->line;
        return 0;
}
