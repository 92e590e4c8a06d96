/* SPDX-License-Identifier: MIT */
/* Varlink IDL: a hand-written recursive-descent parser for the grammar on
 * varlink.org (see notes/varlink-systemd.md §1.6) and a validator that checks
 * JSON parameters against the parsed declarations.
 *
 * The parsed form lives in an arena owned by the VarlinkIdl, so freeing it
 * never walks the type graph (named types may be recursive). Recursion while
 * parsing is bounded by VARLINK_IDL_DEPTH_MAX, and while validating by
 * VALIDATE_DEPTH_MAX: neither follows attacker-chosen depth without a cap.
 *
 * Validation allocates nothing on success: struct fields and enum values are
 * kept sorted by name and found by binary search, and required fields are
 * counted rather than looked up one by one. */

#include "varlink-idl.h"

#include <assert.h>
#include <json-c/json_object_iterator.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "macro.h"

#define VARLINK_IDL_TEXT_MAX    (1024U * 1024U)
#define VARLINK_IDL_MEMBERS_MAX 4096U
#define VARLINK_IDL_DEPTH_MAX   64U
/* JSON nesting followed while validating; json-c's tokener stops at 32 by
 * default, this only guards against objects built by hand. */
#define VALIDATE_DEPTH_MAX      128U
/* How much of a name goes into an error message. */
#define NAME_SHOWN_MAX          64

/* ---- Data model ------------------------------------------------------ */

typedef enum TypeKind {
        TYPE_BOOL,
        TYPE_INT,
        TYPE_FLOAT,
        TYPE_STRING,
        TYPE_OBJECT,
        TYPE_STRUCT,
        TYPE_ENUM,
        TYPE_ARRAY,
        TYPE_MAP,
        TYPE_NAMED,
} TypeKind;

typedef struct Type Type;

/* A struct field, or an enum value (type == NULL). */
typedef struct Field {
        const char *name;
        const Type *type;
        bool nullable;
        unsigned decl_index;   /* position in the declaration */
        unsigned line, column; /* for diagnostics while parsing */
} Field;

struct Type {
        TypeKind kind;
        unsigned n_fields;   /* struct, enum */
        unsigned n_required; /* struct: fields that are not nullable */
        const Field *fields; /* struct, enum: sorted by name */
        const Type *element; /* array, map: the element; named: the target */
        const char *name;    /* named */
        unsigned line, column; /* named: where it is referenced */
        Type *next_ref;      /* named: next reference to resolve */
};

typedef enum MemberKind {
        MEMBER_TYPE,
        MEMBER_METHOD,
        MEMBER_ERROR,
} MemberKind;

typedef struct Member {
        MemberKind kind;
        const char *name;
        const Type *type;   /* type: struct/enum; method: input; error: parameters */
        const Type *output; /* method: output */
        unsigned line, column;
} Member;

typedef struct ArenaChunk {
        struct ArenaChunk *next;
        size_t used, size;
        max_align_t data[];
} ArenaChunk;

struct VarlinkIdl {
        const char *name;
        Member *members; /* declaration order */
        unsigned n_members, n_members_allocated;
        const Member **by_name;
        const Member **methods; /* declaration order */
        unsigned n_methods;
        ArenaChunk *arena;
};

/* Scalars carry no data, so every use shares one read-only node. */
static const Type type_bool = { .kind = TYPE_BOOL };
static const Type type_int = { .kind = TYPE_INT };
static const Type type_float = { .kind = TYPE_FLOAT };
static const Type type_string = { .kind = TYPE_STRING };
static const Type type_object = { .kind = TYPE_OBJECT };

/* ---- Arena ----------------------------------------------------------- */

static void *arena_alloc(VarlinkIdl *idl, size_t size) {
        const size_t align = alignof(max_align_t);

        size = (size + align - 1) & ~(align - 1);
        if (size == 0)
                size = align;

        ArenaChunk *c = idl->arena;
        if (!c || c->size - c->used < size) {
                size_t want = c ? MIN(c->size * 2, (size_t) 256 * 1024) : 4096;
                want = MAX(want, size);
                c = malloc(sizeof(ArenaChunk) + want);
                if (!c)
                        return NULL;
                c->next = idl->arena;
                c->used = 0;
                c->size = want;
                idl->arena = c;
        }

        void *p = (char *) c->data + c->used;
        c->used += size;
        memset(p, 0, size);
        return p;
}

static char *arena_strndup(VarlinkIdl *idl, const char *s, size_t n) {
        char *p = arena_alloc(idl, n + 1);
        if (!p)
                return NULL;
        memcpy(p, s, n);
        p[n] = 0;
        return p;
}

VarlinkIdl *varlink_idl_free(VarlinkIdl *idl) {
        if (!idl)
                return NULL;

        while (idl->arena) {
                ArenaChunk *next = idl->arena->next;
                free(idl->arena);
                idl->arena = next;
        }
        free(idl->members);
        free(idl->by_name);
        free(idl->methods);
        free(idl);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(VarlinkIdl *, varlink_idl_free);

/* ---- Names ----------------------------------------------------------- */

static bool ascii_alpha(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool ascii_alnum(char c) {
        return ascii_alpha(c) || (c >= '0' && c <= '9');
}

/* [A-Za-z0-9_]*: a run of word characters, checked against the name rules
 * afterwards so an error can name the whole bad word. */
static size_t word_len(const char *p) {
        size_t n = 0;
        while (ascii_alnum(p[n]) || p[n] == '_')
                n++;
        return n;
}

static bool word_is(const char *p, size_t n, const char *word) {
        return strlen(word) == n && memcmp(p, word, n) == 0;
}

/* [A-Z][A-Za-z0-9]* */
static bool member_name_valid(const char *s, size_t n) {
        if (n == 0 || !(s[0] >= 'A' && s[0] <= 'Z'))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!ascii_alnum(s[i]))
                        return false;
        return true;
}

/* [A-Za-z](_?[A-Za-z0-9])* */
static bool field_name_valid(const char *s, size_t n) {
        if (n == 0 || !ascii_alpha(s[0]))
                return false;
        for (size_t i = 1; i < n; i++) {
                if (s[i] == '_') {
                        if (s[i - 1] == '_' || i == n - 1)
                                return false;
                } else if (!ascii_alnum(s[i]))
                        return false;
        }
        return true;
}

/* [A-Za-z]([-]*[A-Za-z0-9])*(\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+ */
static bool interface_name_valid(const char *s, size_t n) {
        unsigned segments = 0;
        size_t i = 0;

        for (;;) {
                if (i >= n)
                        return false;
                if (segments == 0 ? !ascii_alpha(s[i]) : !ascii_alnum(s[i]))
                        return false;
                for (i++; i < n && s[i] != '.'; i++)
                        if (s[i] != '-' && !ascii_alnum(s[i]))
                                return false;
                if (s[i - 1] == '-')
                        return false;
                segments++;
                if (i == n)
                        break;
                i++; /* the '.' */
        }
        return segments >= 2;
}

static int shown_len(size_t n) {
        return (int) MIN(n, (size_t) NAME_SHOWN_MAX);
}

/* ---- Parser ---------------------------------------------------------- */

typedef struct Parser {
        const char *p;
        unsigned line, column;
        bool saw_newline; /* skip_ws() passed a line end (or a comment) */
        unsigned depth;
        VarlinkIdl *idl;
        Type *refs, **refs_tail; /* named references, in text order */
        VarlinkIdlError error;
} Parser;

_printf_(4, 5)
static int parser_fail_at(Parser *ps, unsigned line, unsigned column, const char *fmt, ...) {
        va_list ap;

        ps->error.line = line;
        ps->error.column = column;
        va_start(ap, fmt);
        (void) vsnprintf(ps->error.message, sizeof ps->error.message, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

#define parser_fail(ps, ...) parser_fail_at((ps), (ps)->line, (ps)->column, __VA_ARGS__)

static int parser_oom(Parser *ps) {
        (void) parser_fail(ps, "out of memory");
        return -ENOMEM;
}

/* Moves over n characters known not to be line ends. */
static void parser_advance(Parser *ps, size_t n) {
        ps->p += n;
        ps->column += (unsigned) n;
}

/* Whitespace and '#' comments; sets saw_newline if a line ended. A comment
 * always runs to the end of its line (or text), so it counts as one. */
static void skip_ws(Parser *ps) {
        ps->saw_newline = false;
        for (;;) {
                char c = *ps->p;

                if (c == ' ' || c == '\t')
                        parser_advance(ps, 1);
                else if (c == '\n' || c == '\r') {
                        ps->p += (c == '\r' && ps->p[1] == '\n') ? 2 : 1;
                        ps->line++;
                        ps->column = 1;
                        ps->saw_newline = true;
                } else if (c == '#') {
                        while (*ps->p && *ps->p != '\n' && *ps->p != '\r')
                                parser_advance(ps, 1);
                        ps->saw_newline = true;
                } else
                        return;
        }
}

static bool consume(Parser *ps, const char *token) {
        size_t n = strlen(token);

        if (strncmp(ps->p, token, n) != 0)
                return false;
        parser_advance(ps, n);
        return true;
}

static int enter(Parser *ps) {
        if (ps->depth >= VARLINK_IDL_DEPTH_MAX)
                return parser_fail(ps, "nesting too deep (max %u levels)", VARLINK_IDL_DEPTH_MAX);
        ps->depth++;
        return 0;
}

static int field_cmp(const void *a, const void *b) {
        const Field *x = a, *y = b;
        int r = strcmp(x->name, y->name);
        if (r != 0)
                return r;
        return x->decl_index < y->decl_index ? -1 : x->decl_index > y->decl_index;
}

static int parse_compound(Parser *ps, bool allow_enum, const Type **ret);

static int parse_type(Parser *ps, const Type **ret) {
        unsigned line = ps->line, column = ps->column;
        int r;

        if (*ps->p == '?')
                return parser_fail(ps, "'?' is only allowed at the start of a field's type");

        if (*ps->p == '[') {
                TypeKind kind;

                if (consume(ps, "[]"))
                        kind = TYPE_ARRAY;
                else if (consume(ps, "[string]"))
                        kind = TYPE_MAP;
                else
                        return parser_fail(ps, "expected '[]' or '[string]'");

                /* Check the depth where the '[' is, so the error points at it. */
                if (ps->depth >= VARLINK_IDL_DEPTH_MAX)
                        return parser_fail_at(ps, line, column, "nesting too deep (max %u levels)",
                                              VARLINK_IDL_DEPTH_MAX);
                ps->depth++;

                const Type *element;
                r = parse_type(ps, &element);
                if (r < 0)
                        return r;
                ps->depth--;

                Type *t = arena_alloc(ps->idl, sizeof(Type));
                if (!t)
                        return parser_oom(ps);
                t->kind = kind;
                t->element = element;
                *ret = t;
                return 0;
        }

        if (*ps->p == '(')
                return parse_compound(ps, /* allow_enum= */ true, ret);

        size_t n = word_len(ps->p);
        if (n == 0)
                return parser_fail(ps, "expected type");

        static const struct {
                const char *word;
                const Type *type;
        } scalars[] = {
                { "bool", &type_bool },
                { "int", &type_int },
                { "float", &type_float },
                { "string", &type_string },
                { "object", &type_object },
        };
        for (size_t i = 0; i < ELEMENTSOF(scalars); i++)
                if (word_is(ps->p, n, scalars[i].word)) {
                        parser_advance(ps, n);
                        *ret = scalars[i].type;
                        return 0;
                }

        if (!member_name_valid(ps->p, n))
                return parser_fail(ps, "unknown type '%.*s'", shown_len(n), ps->p);

        /* A named type; resolved once the whole interface is read, since it
         * may be declared after its first use. */
        Type *t = arena_alloc(ps->idl, sizeof(Type));
        if (!t)
                return parser_oom(ps);
        t->kind = TYPE_NAMED;
        t->name = arena_strndup(ps->idl, ps->p, n);
        if (!t->name)
                return parser_oom(ps);
        t->line = line;
        t->column = column;
        *ps->refs_tail = t;
        ps->refs_tail = &t->next_ref;

        parser_advance(ps, n);
        *ret = t;
        return 0;
}

/* '(' field: type, ... ')' or, if allow_enum, '(' value, ... ')'. The caller
 * has checked that the text is at '('. */
static int parse_compound(Parser *ps, bool allow_enum, const Type **ret) {
        enum { MODE_UNKNOWN, MODE_STRUCT, MODE_ENUM } mode = MODE_UNKNOWN;
        _cleanup_free_ Field *fields = NULL;
        size_t n_fields = 0, n_allocated = 0;
        int r;

        assert(*ps->p == '(');

        r = enter(ps);
        if (r < 0)
                return r;

        parser_advance(ps, 1);
        skip_ws(ps);

        if (*ps->p == ')')
                mode = MODE_STRUCT;
        else
                for (;;) {
                        unsigned line = ps->line, column = ps->column;
                        size_t n = word_len(ps->p);

                        if (n == 0)
                                return parser_fail(ps, mode == MODE_ENUM ? "expected enum value" : "expected field name");
                        if (!field_name_valid(ps->p, n))
                                return parser_fail(ps, "invalid %s '%.*s'",
                                                   mode == MODE_ENUM ? "enum value" : "field name",
                                                   shown_len(n), ps->p);

                        if (n_fields == n_allocated) {
                                size_t k = n_allocated ? n_allocated * 2 : 8;
                                Field *nf = realloc(fields, k * sizeof(Field));
                                if (!nf)
                                        return parser_oom(ps);
                                fields = nf;
                                n_allocated = k;
                        }

                        Field *f = &fields[n_fields];
                        *f = (Field) {
                                .name = arena_strndup(ps->idl, ps->p, n),
                                .decl_index = (unsigned) n_fields,
                                .line = line,
                                .column = column,
                        };
                        if (!f->name)
                                return parser_oom(ps);
                        n_fields++;

                        parser_advance(ps, n);
                        skip_ws(ps);

                        if (mode == MODE_UNKNOWN)
                                mode = (*ps->p == ':' || !allow_enum) ? MODE_STRUCT : MODE_ENUM;

                        if (mode == MODE_STRUCT) {
                                if (*ps->p != ':')
                                        return parser_fail(ps, "expected ':' after field name");
                                parser_advance(ps, 1);
                                skip_ws(ps);

                                if (*ps->p == '?') {
                                        f->nullable = true;
                                        parser_advance(ps, 1);
                                }
                                r = parse_type(ps, &f->type);
                                if (r < 0)
                                        return r;
                                skip_ws(ps);
                        } else if (*ps->p == ':')
                                return parser_fail(ps, "unexpected ':' in enum (enum values have no type)");

                        if (*ps->p == ',') {
                                parser_advance(ps, 1);
                                skip_ws(ps);
                                continue;
                        }
                        if (*ps->p == ')')
                                break;
                        return parser_fail(ps, "expected ',' or ')'");
                }

        parser_advance(ps, 1); /* ')' */
        ps->depth--;

        /* Sorted by name, ties in declaration order: duplicates end up next
         * to each other, and the one reported is the earliest repetition. */
        if (n_fields > 1)
                qsort(fields, n_fields, sizeof(Field), field_cmp);
        const Field *dup = NULL;
        for (size_t i = 1; i < n_fields; i++)
                if (streq_ptr(fields[i - 1].name, fields[i].name) &&
                    (!dup || fields[i].decl_index < dup->decl_index))
                        dup = &fields[i];
        if (dup)
                return parser_fail_at(ps, dup->line, dup->column, "duplicate %s '%s'",
                                      mode == MODE_ENUM ? "enum value" : "field", dup->name);

        Type *t = arena_alloc(ps->idl, sizeof(Type));
        if (!t)
                return parser_oom(ps);
        t->kind = mode == MODE_ENUM ? TYPE_ENUM : TYPE_STRUCT;
        t->n_fields = (unsigned) n_fields;
        if (n_fields > 0) {
                Field *copy = arena_alloc(ps->idl, n_fields * sizeof(Field));
                if (!copy)
                        return parser_oom(ps);
                memcpy(copy, fields, n_fields * sizeof(Field));
                t->fields = copy;
        }
        for (size_t i = 0; i < n_fields; i++)
                if (t->kind == TYPE_STRUCT && !fields[i].nullable)
                        t->n_required++;

        *ret = t;
        return 0;
}

static const char *const member_kind_word[] = {
        [MEMBER_TYPE] = "type",
        [MEMBER_METHOD] = "method",
        [MEMBER_ERROR] = "error",
};

static int parse_member(Parser *ps) {
        VarlinkIdl *idl = ps->idl;
        MemberKind kind;
        int r;

        size_t n = word_len(ps->p);
        if (word_is(ps->p, n, "type"))
                kind = MEMBER_TYPE;
        else if (word_is(ps->p, n, "method"))
                kind = MEMBER_METHOD;
        else if (word_is(ps->p, n, "error"))
                kind = MEMBER_ERROR;
        else if (n > 0)
                return parser_fail(ps, "expected 'type', 'method' or 'error', got '%.*s'", shown_len(n), ps->p);
        else
                return parser_fail(ps, "expected 'type', 'method' or 'error'");

        if (idl->n_members >= VARLINK_IDL_MEMBERS_MAX)
                return parser_fail(ps, "too many members (max %u)", VARLINK_IDL_MEMBERS_MAX);

        parser_advance(ps, n);
        skip_ws(ps);

        unsigned line = ps->line, column = ps->column;
        n = word_len(ps->p);
        if (n == 0)
                return parser_fail(ps, "expected %s name", member_kind_word[kind]);
        if (!member_name_valid(ps->p, n))
                return parser_fail(ps, "invalid %s name '%.*s' (must match [A-Z][A-Za-z0-9]*)",
                                   member_kind_word[kind], shown_len(n), ps->p);

        Member m = {
                .kind = kind,
                .name = arena_strndup(idl, ps->p, n),
                .line = line,
                .column = column,
        };
        if (!m.name)
                return parser_oom(ps);

        parser_advance(ps, n);
        skip_ws(ps);

        if (*ps->p != '(')
                return parser_fail(ps, "expected '(' after %s name", member_kind_word[kind]);
        r = parse_compound(ps, /* allow_enum= */ kind == MEMBER_TYPE, &m.type);
        if (r < 0)
                return r;

        if (kind == MEMBER_METHOD) {
                skip_ws(ps);
                if (!consume(ps, "->"))
                        return parser_fail(ps, "expected '->' after method parameters");
                skip_ws(ps);
                if (*ps->p != '(')
                        return parser_fail(ps, "expected '(' after '->'");
                r = parse_compound(ps, /* allow_enum= */ false, &m.output);
                if (r < 0)
                        return r;
        }

        if (idl->n_members == idl->n_members_allocated) {
                unsigned k = idl->n_members_allocated ? idl->n_members_allocated * 2 : 16;
                Member *nm = realloc(idl->members, k * sizeof(Member));
                if (!nm)
                        return parser_oom(ps);
                idl->members = nm;
                idl->n_members_allocated = k;
        }
        idl->members[idl->n_members++] = m;
        return 0;
}

static int member_ptr_cmp(const void *a, const void *b) {
        const Member *x = *(const Member *const *) a, *y = *(const Member *const *) b;
        int r = strcmp(x->name, y->name);
        if (r != 0)
                return r;
        return x < y ? -1 : x > y;
}

static const Member *member_find(const VarlinkIdl *idl, const char *name) {
        size_t lo = 0, hi = idl->n_members;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int r = strcmp(name, idl->by_name[mid]->name);
                if (r == 0)
                        return idl->by_name[mid];
                if (r < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

/* Indexes the members, rejects duplicate names and resolves named types. */
static int parser_finish(Parser *ps) {
        VarlinkIdl *idl = ps->idl;

        idl->by_name = malloc(MAX(idl->n_members, 1U) * sizeof(Member *));
        idl->methods = malloc(MAX(idl->n_members, 1U) * sizeof(Member *));
        if (!idl->by_name || !idl->methods)
                return parser_oom(ps);

        for (unsigned i = 0; i < idl->n_members; i++) {
                idl->by_name[i] = &idl->members[i];
                if (idl->members[i].kind == MEMBER_METHOD)
                        idl->methods[idl->n_methods++] = &idl->members[i];
        }
        qsort(idl->by_name, idl->n_members, sizeof(Member *), member_ptr_cmp);

        const Member *dup = NULL;
        for (unsigned i = 1; i < idl->n_members; i++)
                if (streq_ptr(idl->by_name[i - 1]->name, idl->by_name[i]->name) &&
                    (!dup || idl->by_name[i] < dup))
                        dup = idl->by_name[i];
        if (dup)
                return parser_fail_at(ps, dup->line, dup->column, "duplicate member name '%s'", dup->name);

        for (Type *t = ps->refs; t; t = t->next_ref) {
                const Member *m = member_find(idl, t->name);
                if (!m)
                        return parser_fail_at(ps, t->line, t->column, "unknown type '%s'", t->name);
                if (m->kind != MEMBER_TYPE)
                        return parser_fail_at(ps, t->line, t->column, "'%s' is %s, not a type", t->name,
                                              m->kind == MEMBER_METHOD ? "a method" : "an error");
                t->element = m->type;
        }
        return 0;
}

static int parse_interface(Parser *ps) {
        int r;

        skip_ws(ps);
        size_t n = word_len(ps->p);
        if (!word_is(ps->p, n, "interface"))
                return parser_fail(ps, "expected 'interface'");
        parser_advance(ps, n);
        skip_ws(ps);

        n = 0;
        while (ascii_alnum(ps->p[n]) || ps->p[n] == '.' || ps->p[n] == '-' || ps->p[n] == '_')
                n++;
        if (n == 0)
                return parser_fail(ps, "expected interface name");
        if (!interface_name_valid(ps->p, n))
                return parser_fail(ps, "invalid interface name '%.*s'", shown_len(n), ps->p);
        ps->idl->name = arena_strndup(ps->idl, ps->p, n);
        if (!ps->idl->name)
                return parser_oom(ps);
        parser_advance(ps, n);

        skip_ws(ps);
        if (!*ps->p)
                return parser_fail(ps, "expected 'type', 'method' or 'error' (an interface needs at least one member)");
        if (!ps->saw_newline)
                return parser_fail(ps, "expected end of line after interface name");

        for (;;) {
                r = parse_member(ps);
                if (r < 0)
                        return r;
                skip_ws(ps);
                if (!*ps->p)
                        break;
                if (!ps->saw_newline)
                        return parser_fail(ps, "expected end of line after declaration");
        }

        return parser_finish(ps);
}

int varlink_idl_parse(const char *text, VarlinkIdl **ret, VarlinkIdlError *reterr) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = NULL;
        int r;

        assert(text);
        assert(ret);

        Parser ps = {
                .p = text,
                .line = 1,
                .column = 1,
        };
        ps.refs_tail = &ps.refs;

        if (strnlen(text, VARLINK_IDL_TEXT_MAX + 1) > VARLINK_IDL_TEXT_MAX)
                r = parser_fail(&ps, "interface description too long (max %u bytes)", VARLINK_IDL_TEXT_MAX);
        else {
                idl = calloc(1, sizeof(VarlinkIdl));
                ps.idl = idl;
                r = idl ? parse_interface(&ps) : parser_oom(&ps);
        }
        if (r < 0) {
                if (reterr)
                        *reterr = ps.error;
                return r;
        }

        *ret = TAKE_PTR(idl);
        return 0;
}

/* ---- Queries --------------------------------------------------------- */

const char *varlink_idl_name(const VarlinkIdl *idl) {
        return idl ? idl->name : NULL;
}

static const Member *member_find_kind(const VarlinkIdl *idl, const char *name, MemberKind kind) {
        if (!idl || !name)
                return NULL;
        const Member *m = member_find(idl, name);
        return m && m->kind == kind ? m : NULL;
}

bool varlink_idl_has_method(const VarlinkIdl *idl, const char *method) {
        return member_find_kind(idl, method, MEMBER_METHOD);
}

bool varlink_idl_has_error(const VarlinkIdl *idl, const char *error) {
        return member_find_kind(idl, error, MEMBER_ERROR);
}

unsigned varlink_idl_n_methods(const VarlinkIdl *idl) {
        return idl ? idl->n_methods : 0;
}

const char *varlink_idl_method_name(const VarlinkIdl *idl, unsigned i) {
        if (!idl || i >= idl->n_methods)
                return NULL;
        return idl->methods[i]->name;
}

/* ---- Validation ------------------------------------------------------ */

/* Binary search by (s, n) in name order; strings with an embedded NUL never
 * match. strcmp order equals memcmp-then-length order for NUL-free names. */
static const Field *field_find(const Type *t, const char *s, size_t n) {
        size_t lo = 0, hi = t->n_fields;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const char *name = t->fields[mid].name;
                size_t k = strlen(name);
                int r = memcmp(s, name, MIN(n, k));
                if (r == 0)
                        r = n < k ? -1 : n > k;
                if (r == 0)
                        return &t->fields[mid];
                if (r < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

static bool json_is_null(json_object *v) {
        return json_object_get_type(v) == json_type_null;
}

static int validate_value(const Type *t, json_object *v, unsigned depth);

/* The required field that is absent or null, earliest in the declaration.
 * Only called on the error path. o may be NULL (no parameters). */
static const Field *first_missing(const Type *t, json_object *o) {
        const Field *best = NULL;

        for (unsigned i = 0; i < t->n_fields; i++) {
                const Field *f = &t->fields[i];
                json_object *v = NULL;

                if (f->nullable)
                        continue;
                if (o && json_object_object_get_ex(o, f->name, &v) && !json_is_null(v))
                        continue;
                if (!best || f->decl_index < best->decl_index)
                        best = f;
        }
        return best;
}

/* Checks the members of object o against struct t; on -EINVAL *ret_bad
 * names the offending field (borrowed from t or o). */
static int validate_struct(const Type *t, json_object *o, unsigned depth, const char **ret_bad) {
        struct json_object_iterator it = json_object_iter_begin(o), end = json_object_iter_end(o);
        unsigned n_required = 0;

        for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
                const char *key = json_object_iter_peek_name(&it);
                json_object *v = json_object_iter_peek_value(&it);
                const Field *f = field_find(t, key, strlen(key));

                if (!f) {
                        *ret_bad = key;
                        return -EINVAL;
                }
                if (json_is_null(v)) {
                        if (!f->nullable) {
                                *ret_bad = f->name;
                                return -EINVAL;
                        }
                        continue;
                }
                if (validate_value(f->type, v, depth + 1) < 0) {
                        *ret_bad = f->name;
                        return -EINVAL;
                }
                if (!f->nullable)
                        n_required++;
        }

        /* Keys are unique in a json-c object, so counting is exact. */
        if (n_required != t->n_required) {
                const Field *f = first_missing(t, o);
                *ret_bad = f ? f->name : "parameters";
                return -EINVAL;
        }
        return 0;
}

static bool is_set_element(const Type *t) {
        if (t->kind == TYPE_NAMED)
                t = t->element;
        return t->kind == TYPE_STRUCT && t->n_fields == 0;
}

static int validate_value(const Type *t, json_object *v, unsigned depth) {
        json_type jt = json_object_get_type(v);

        if (depth >= VALIDATE_DEPTH_MAX)
                return -EINVAL;

        switch (t->kind) {
        case TYPE_BOOL:
                return jt == json_type_boolean ? 0 : -EINVAL;
        case TYPE_INT:
                return jt == json_type_int ? 0 : -EINVAL;
        case TYPE_FLOAT:
                return jt == json_type_int || jt == json_type_double ? 0 : -EINVAL;
        case TYPE_STRING:
                return jt == json_type_string ? 0 : -EINVAL;
        case TYPE_OBJECT:
                return jt == json_type_object ? 0 : -EINVAL;
        case TYPE_NAMED:
                /* The target is a struct or enum, which counts the level. */
                return validate_value(t->element, v, depth);
        case TYPE_ENUM: {
                if (jt != json_type_string)
                        return -EINVAL;
                int n = json_object_get_string_len(v);
                return n >= 0 && field_find(t, json_object_get_string(v), (size_t) n) ? 0 : -EINVAL;
        }
        case TYPE_ARRAY: {
                if (jt != json_type_array)
                        return -EINVAL;
                size_t n = json_object_array_length(v);
                for (size_t i = 0; i < n; i++)
                        if (validate_value(t->element, json_object_array_get_idx(v, i), depth + 1) < 0)
                                return -EINVAL;
                return 0;
        }
        case TYPE_MAP: {
                if (jt != json_type_object)
                        return -EINVAL;
                /* [string](): a set; the values carry no information (systemd
                 * sends {}), so any value is accepted. */
                if (is_set_element(t->element))
                        return 0;
                struct json_object_iterator it = json_object_iter_begin(v), end = json_object_iter_end(v);
                for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
                        if (validate_value(t->element, json_object_iter_peek_value(&it), depth + 1) < 0)
                                return -EINVAL;
                return 0;
        }
        case TYPE_STRUCT: {
                const char *bad;
                if (jt != json_type_object)
                        return -EINVAL;
                return validate_struct(t, v, depth, &bad);
        }
        }
        return -EINVAL;
}

static int validate_parameters(const Type *t, json_object *parameters, char **ret_field) {
        const char *bad = NULL;
        int r;

        if (json_is_null(parameters)) {
                /* Same as {}: valid unless something is required. */
                const Field *f = first_missing(t, NULL);
                if (f) {
                        bad = f->name;
                        r = -EINVAL;
                } else
                        r = 0;
        } else if (json_object_get_type(parameters) != json_type_object) {
                bad = "parameters";
                r = -EINVAL;
        } else
                r = validate_struct(t, parameters, 0, &bad);

        if (r < 0 && ret_field) {
                char *s = strdup(bad);
                if (!s)
                        return -ENOMEM;
                *ret_field = s;
        }
        return r;
}

int varlink_idl_validate_input(const VarlinkIdl *idl, const char *method,
                               json_object *parameters, char **ret_field) {
        const Member *m = member_find_kind(idl, method, MEMBER_METHOD);
        if (!m)
                return -ENOENT;
        return validate_parameters(m->type, parameters, ret_field);
}

int varlink_idl_validate_output(const VarlinkIdl *idl, const char *method,
                                json_object *parameters, char **ret_field) {
        const Member *m = member_find_kind(idl, method, MEMBER_METHOD);
        if (!m)
                return -ENOENT;
        return validate_parameters(m->output, parameters, ret_field);
}

int varlink_idl_validate_error(const VarlinkIdl *idl, const char *error,
                               json_object *parameters, char **ret_field) {
        const Member *m = member_find_kind(idl, error, MEMBER_ERROR);
        if (!m)
                return -ENOENT;
        return validate_parameters(m->type, parameters, ret_field);
}
