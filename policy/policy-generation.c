/* SPDX-License-Identifier: MIT */
/* Loading a policy: the entry file and, breadth first, the files it
 * imports (relative paths resolve against the entry file's directory; each
 * file is loaded once, so import cycles are harmless), then checking and
 * compiling the whole set into one reference-counted generation. */

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "policy-internal.h"
#include "policy-lexer.h"
#include "policy-parser.h"

static int read_file_fs(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat st;

        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EISDIR;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        size_t cap = (size_t) st.st_size + 1, n = 0;
        _cleanup_free_ char *buf = malloc(cap + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = read(fd, buf + n, cap - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n == cap) {
                        /* The file grew while we read it. */
                        if (n > max)
                                return -EFBIG;
                        char *q = realloc(buf, cap * 2 + 1);
                        if (!q)
                                return -ENOMEM;
                        buf = q;
                        cap *= 2;
                }
        }
        if (n > max)
                return -EFBIG;
        buf[n] = 0;
        *ret_text = TAKE_PTR(buf);
        *ret_len = n;
        return 0;
}

PolicyGeneration *policy_generation_ref(PolicyGeneration *g) {
        if (g)
                g->refcount++;
        return g;
}

static void generation_free(PolicyGeneration *g) {
        for (size_t i = 0; i < g->n_files; i++) {
                free(g->files[i].path);
                free(g->files[i].dir);
        }
        free(g->files);
        for (size_t i = 0; i < g->n_functions; i++)
                free(g->functions[i].insns);
        free(g->functions);
        for (int p = 0; p < _POLICY_PHASE_MAX; p++)
                if (g->handlers[p]) {
                        free(g->handlers[p]->insns);
                        free(g->handlers[p]);
                }
        for (size_t i = 0; i < g->n_consts; i++)
                policy_value_unref(g->consts[i]);
        free(g->consts);
        for (size_t i = 0; i < g->n_globals; i++)
                policy_value_unref(g->globals[i]);
        free(g->globals);
        free(g->regexes);
        free(g->cache_sites);
        for (size_t i = 0; i < g->n_maps; i++) {
                free(g->maps[i].name);
                free(g->maps[i].path);
                free(g->maps[i].text);
                free(g->maps[i].slots);
        }
        free(g->maps);
        policy_arena_free(g->arena);
        free(g);
}

PolicyGeneration *policy_generation_unref(PolicyGeneration *g) {
        if (g && --g->refcount == 0)
                generation_free(g);
        return NULL;
}

uint64_t policy_generation_id(const PolicyGeneration *g) {
        return g->id;
}

bool policy_generation_has_handler(const PolicyGeneration *g, PolicyPhase phase) {
        return phase >= 0 && phase < _POLICY_PHASE_MAX && g->handlers[phase];
}

/* Lexically normalises a relative or absolute path: drops "." segments and
 * empty ones, folds "x/..". Good enough to see that two imports name the
 * same file; a symlink trick only loads a file twice (bounded by the file
 * limit), it cannot loop. */
static char *path_normalize(const char *p) {
        size_t n = strlen(p);
        _cleanup_free_ char *out = malloc(n + 2);
        const char **segs = calloc(n / 2 + 2, sizeof *segs);
        size_t *lens = calloc(n / 2 + 2, sizeof *lens);
        size_t k = 0;
        bool abs = p[0] == '/';

        if (!out || !segs || !lens) {
                free(segs);
                free(lens);
                return NULL;
        }
        for (const char *s = p; *s;) {
                while (*s == '/')
                        s++;
                if (!*s)
                        break;
                const char *e = strchrnul(s, '/');
                size_t l = (size_t) (e - s);
                if (l == 1 && s[0] == '.')
                        ;
                else if (l == 2 && s[0] == '.' && s[1] == '.' && k > 0 &&
                         !(lens[k - 1] == 2 && segs[k - 1][0] == '.' && segs[k - 1][1] == '.'))
                        k--;
                else {
                        segs[k] = s;
                        lens[k] = l;
                        k++;
                }
                s = e;
        }
        size_t o = 0;
        if (abs)
                out[o++] = '/';
        for (size_t i = 0; i < k; i++) {
                if (i > 0)
                        out[o++] = '/';
                memcpy(out + o, segs[i], lens[i]);
                o += lens[i];
        }
        if (o == 0)
                out[o++] = '.';
        out[o] = 0;
        free(segs);
        free(lens);
        return TAKE_PTR(out);
}

static char *dir_of(const char *path) {
        const char *slash = strrchr(path, '/');
        if (!slash)
                return strdup(".");
        if (slash == path)
                return strdup("/");
        return strndup(path, (size_t) (slash - path));
}

static int add_file(PolicyGeneration *g, const char *path, bool entry, size_t *ret_index) {
        for (size_t i = 0; i < g->n_files; i++)
                if (strcmp(g->files[i].path, path) == 0) {
                        *ret_index = i;
                        return 0;
                }
        if (g->n_files >= POLICY_FILES_MAX)
                return -E2BIG;
        PolicyFile *q = reallocarray(g->files, g->n_files + 1, sizeof *q);
        if (!q)
                return -ENOMEM;
        g->files = q;
        PolicyFile *f = &g->files[g->n_files];
        *f = (PolicyFile) { .is_entry = entry };
        f->path = strdup(path);
        f->dir = dir_of(path);
        if (!f->path || !f->dir) {
                free(f->path);
                free(f->dir);
                return -ENOMEM;
        }
        *ret_index = g->n_files++;
        return 0;
}

/* ---- file_lookup() maps ---------------------------------------------------- */

/* FNV-1a: the table's contents come from the operator, not from mail, so
 * a keyed hash buys nothing here. */
static uint64_t map_hash(const char *p, size_t n) {
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char) p[i];
                h *= 1099511628211ULL;
        }
        return h;
}

int policy_generation_add_map(PolicyGeneration *g, const char *name, size_t name_len, PolicyLoc loc) {
        for (size_t i = 0; i < g->n_maps; i++)
                if (g->maps[i].name_len == name_len && memcmp(g->maps[i].name, name, name_len) == 0)
                        return 0;
        if (g->n_maps >= POLICY_MAPS_MAX)
                return -E2BIG;
        PolicyMap *q = reallocarray(g->maps, g->n_maps + 1, sizeof *q);
        if (!q)
                return -ENOMEM;
        g->maps = q;

        _cleanup_free_ char *n = strndup(name, name_len), *joined = NULL;
        if (!n)
                return -ENOMEM;
        /* Like imports: relative to the entry file's directory. */
        if (n[0] == '/')
                joined = strdup(n);
        else if (asprintf(&joined, "%s/%s", g->n_files > 0 ? g->files[0].dir : ".", n) < 0)
                joined = NULL;
        if (!joined)
                return -ENOMEM;
        char *norm = path_normalize(joined);
        if (!norm)
                return -ENOMEM;
        int alias = -1;
        for (size_t i = 0; i < g->n_maps && alias < 0; i++)
                if (g->maps[i].alias < 0 && strcmp(g->maps[i].path, norm) == 0)
                        alias = (int) i;
        g->maps[g->n_maps++] = (PolicyMap) {
                .name = TAKE_PTR(n),
                .name_len = name_len,
                .path = norm,
                .loc = loc,
                .alias = alias,
        };
        return 0;
}

static PolicyMapEntry *map_slot(PolicyMapEntry *slots, size_t cap, const char *key, size_t len, uint64_t h) {
        for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1)) {
                PolicyMapEntry *e = &slots[i];
                if (!e->key || (e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0))
                        return e;
        }
}

/* Adds an entry; returns 1 when the key was there already (the first one stays). */
static int map_put(PolicyMap *m, const char *key, size_t klen, const char *value, size_t vlen) {
        if ((m->n + 1) * 2 > m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 64;
                PolicyMapEntry *slots = calloc(cap, sizeof *slots);
                if (!slots)
                        return -ENOMEM;
                for (size_t i = 0; i < m->cap; i++)
                        if (m->slots[i].key)
                                *map_slot(slots, cap, m->slots[i].key, m->slots[i].key_len, m->slots[i].hash) = m->slots[i];
                free(m->slots);
                m->slots = slots;
                m->cap = cap;
        }
        uint64_t h = map_hash(key, klen);
        PolicyMapEntry *e = map_slot(m->slots, m->cap, key, klen, h);
        if (e->key)
                return 1;
        *e = (PolicyMapEntry) {
                .key = key,
                .value = value,
                .key_len = (uint32_t) klen,
                .value_len = (uint32_t) vlen,
                .hash = h,
        };
        m->n++;
        return 0;
}

static bool map_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* One `key value` per line; the key is the first word, the value the rest
 * with surrounding blanks trimmed (possibly empty). Blank lines and lines
 * starting with '#' are skipped. Errors and warnings point at MAP:LINE:1. */
static int map_parse(PolicyMap *m, size_t len, PolicyDiags *diags) {
        char *p = m->text, *end = m->text + len;
        unsigned line = 0;
        int r;

        while (p < end) {
                char *nl = memchr(p, '\n', (size_t) (end - p));
                char *e = nl ?: end;
                line++;
                if ((size_t) (e - p) > POLICY_MAP_LINE_MAX) {
                        policy_diags_add(diags, POLICY_DIAG_ERROR, m->path, line, 1, "line longer than %u bytes",
                                         POLICY_MAP_LINE_MAX);
                        return -EINVAL;
                }
                if (memchr(p, 0, (size_t) (e - p))) {
                        policy_diags_add(diags, POLICY_DIAG_ERROR, m->path, line, 1, "NUL byte in map");
                        return -EINVAL;
                }
                char *k = p;
                p = e + 1;
                while (k < e && map_blank(*k))
                        k++;
                if (k == e || *k == '#')
                        continue;
                char *ke = k;
                while (ke < e && !map_blank(*ke))
                        ke++;
                char *v = ke, *ve = e;
                while (v < ve && map_blank(*v))
                        v++;
                while (ve > v && map_blank(ve[-1]))
                        ve--;
                r = map_put(m, k, (size_t) (ke - k), v, (size_t) (ve - v));
                if (r < 0)
                        return r;
                if (r > 0)
                        policy_diags_add(diags, POLICY_DIAG_WARNING, m->path, line, 1,
                                         "duplicate key '%.*s': the first one is used", (int) MIN(ke - k, 60), k);
        }
        return 0;
}

/* Reads every registered map once, through the same read_file as the
 * policy files. A map that cannot be read is reported at the first call
 * naming it. Returns 0, -EINVAL (diagnostics) or -ENOMEM. */
static int load_maps(PolicyGeneration *g, PolicyReadFileFn read_file, void *userdata, PolicyDiags *diags) {
        bool failed = false;
        int r;

        for (size_t i = 0; i < g->n_maps; i++) {
                PolicyMap *m = &g->maps[i];
                size_t len = 0;
                if (m->alias >= 0)
                        continue;
                r = read_file(userdata, m->path, POLICY_MAP_SIZE_MAX, &m->text, &len);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        m->text = NULL;
                        policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[m->loc.file].path, m->loc.line, m->loc.col,
                                         "cannot read map %s: %s%s", m->path, strerror(-r),
                                         r == -EFBIG ? " (the limit is 16 MiB)" : "");
                        failed = true;
                        continue;
                }
                r = map_parse(m, len, diags);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        failed = true;
        }
        return failed ? -EINVAL : 0;
}

int policy_generation_map_lookup(const PolicyGeneration *g, const char *name, size_t name_len, const char *key,
                                 size_t key_len, const char **ret_value, size_t *ret_len) {
        const PolicyMap *m = NULL;
        for (size_t i = 0; g && i < g->n_maps && !m; i++)
                if (g->maps[i].name_len == name_len && memcmp(g->maps[i].name, name, name_len) == 0)
                        m = &g->maps[i];
        if (!m)
                return -ENOENT;
        if (m->alias >= 0)
                m = &g->maps[m->alias];
        if (m->cap == 0)
                return 0;
        const PolicyMapEntry *e = map_slot(m->slots, m->cap, key, key_len, map_hash(key, key_len));
        if (!e->key)
                return 0;
        *ret_value = e->value;
        *ret_len = e->value_len;
        return 1;
}

static int load(const char *path, const PolicyLoadOptions *opts, PolicyDiags *diags, PolicyGeneration **ret) {
        static const PolicyLoadOptions defaults = {};
        _cleanup_(policy_generation_unrefp) PolicyGeneration *g = NULL;
        PolicyProgram prog = {};
        size_t total = 0, idx;
        bool failed = false;
        int r;

        if (!opts)
                opts = &defaults;
        PolicyReadFileFn read_file = opts->read_file ?: read_file_fs;

        g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        g->refcount = 1;
        g->id = opts->generation_id ?: 1;
        g->arena = policy_arena_new();
        if (!g->arena)
                return -ENOMEM;

        r = add_file(g, path, true, &idx);
        if (r < 0)
                return r;

        for (size_t fi = 0; fi < g->n_files; fi++) {
                _cleanup_free_ char *text = NULL;
                size_t len = 0;

                r = read_file(opts->userdata, g->files[fi].path, POLICY_FILE_MAX, &text, &len);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        /* The importing line reports it; the entry file reports at 1:1. */
                        if (fi == 0)
                                policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[0].path, 1, 1, "cannot read file: %s%s",
                                                 strerror(-r), r == -EFBIG ? " (the limit is 1 MiB)" : "");
                        g->files[fi].decls = NULL;
                        g->files[fi].n_decls = 0;
                        failed = true;
                        continue;
                }
                total += len;
                if (total > POLICY_TOTAL_SIZE_MAX) {
                        policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[fi].path, 1, 1,
                                         "policy files are larger than %u bytes together", POLICY_TOTAL_SIZE_MAX);
                        failed = true;
                        break;
                }
                r = policy_parse(g->arena, (uint32_t) fi, text, len, &g->files[fi], diags);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        failed = true;

                for (size_t d = 0; d < g->files[fi].n_decls; d++) {
                        PolicyNode *imp = g->files[fi].decls[d];
                        if (imp->kind != NODE_IMPORT)
                                continue;
                        size_t plen;
                        const char *rel = policy_value_string(imp->value, &plen);
                        if (plen == 0 || strlen(rel) != plen) {
                                policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[fi].path, imp->loc.line, imp->loc.col,
                                                 "invalid file name in import");
                                failed = true;
                                continue;
                        }
                        _cleanup_free_ char *joined = NULL, *norm = NULL;
                        if (rel[0] == '/')
                                joined = strdup(rel);
                        else if (asprintf(&joined, "%s/%s", g->files[0].dir, rel) < 0)
                                joined = NULL;
                        if (!joined || !(norm = path_normalize(joined)))
                                return -ENOMEM;
                        size_t before = g->n_files;
                        r = add_file(g, norm, false, &idx);
                        if (r == -E2BIG) {
                                policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[fi].path, imp->loc.line, imp->loc.col,
                                                 "too many policy files (at most %u)", POLICY_FILES_MAX);
                                failed = true;
                                continue;
                        }
                        if (r < 0)
                                return r;
                        imp->slot = (int) idx;
                        if (idx == 0)
                                policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[fi].path, imp->loc.line, imp->loc.col,
                                                 "the entry file cannot be imported");
                        if (idx == 0)
                                failed = true;
                        /* Report unreadable imports where they are imported. */
                        if (g->n_files > before) {
                                _cleanup_free_ char *t2 = NULL;
                                size_t l2;
                                int k = read_file(opts->userdata, norm, POLICY_FILE_MAX, &t2, &l2);
                                if (k == -ENOMEM)
                                        return k;
                                if (k < 0) {
                                        policy_diags_add(diags, POLICY_DIAG_ERROR, g->files[fi].path, imp->loc.line,
                                                         imp->loc.col, "cannot import %s: %s", norm, strerror(-k));
                                        failed = true;
                                }
                        }
                }
        }
        if (failed)
                return -EINVAL;

        r = policy_check(g, &prog, diags);
        /* Maps are read even after check errors, so a bad map is reported
         * along with them. */
        if (r != -ENOMEM) {
                int k = load_maps(g, read_file, opts->userdata, diags);
                if (k == -ENOMEM || r >= 0)
                        r = k;
        }
        if (r >= 0)
                r = policy_compile(g, &prog);
        policy_program_done(&prog);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return -EINVAL;
        if (diags->oom)
                return -ENOMEM;
        *ret = TAKE_PTR(g);
        return 0;
}

int policy_generation_load(const char *path, const PolicyLoadOptions *opts, PolicyDiags *diags,
                           PolicyGeneration **ret) {
        int r = load(path, opts, diags, ret);
        policy_diags_sort(diags);
        return r;
}
