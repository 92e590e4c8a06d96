/* SPDX-License-Identifier: MIT */
#include "dkim-tags.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

static bool is_alpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_wsp(char c) {
        return c == ' ' || c == '\t';
}

/* VALCHAR (%x21-3A / %x3C-7E) plus 8-bit bytes, which RFC 8616 allows in
 * values that carry UTF-8 (d=, s= with U-labels). */
static bool is_valchar(unsigned char c) {
        return (c >= 0x21 && c <= 0x7e && c != ';') || c >= 0x80;
}

/* Skips FWS ([*WSP CRLF] 1*WSP, repeated); a line break must be followed
 * by WSP, or it is not FWS and parsing stops there. Bare LF is accepted
 * like CRLF. */
static size_t skip_fws(const char *p, size_t n, size_t i) {
        for (;;) {
                while (i < n && is_wsp(p[i]))
                        i++;
                size_t j = i;
                if (j < n && p[j] == '\r')
                        j++;
                if (j < n && p[j] == '\n' && j + 1 < n && is_wsp(p[j + 1])) {
                        i = j + 1;
                        continue;
                }
                return i;
        }
}

int dkim_tags_parse(const char *p, size_t n, DkimTagList *ret) {
        DkimTag *tags = NULL;
        size_t n_tags = 0;
        size_t i = 0;
        int r = -EINVAL;

        i = skip_fws(p, n, 0);
        if (i == n) {
                /* An empty list is valid (RFC 6376 §3.2: tag-list has at
                 * least one tag-spec, but a record "" is handled by the
                 * callers' required-tag checks). */
                *ret = (DkimTagList) {};
                return 0;
        }

        tags = calloc(DKIM_TAGS_MAX, sizeof *tags);
        if (!tags)
                return -ENOMEM;

        for (;;) {
                i = skip_fws(p, n, i);
                if (i >= n || !is_alpha(p[i]))
                        goto fail;
                size_t name_start = i;
                while (i < n && (is_alpha(p[i]) || is_digit(p[i]) || p[i] == '_'))
                        i++;
                size_t name_len = i - name_start;
                i = skip_fws(p, n, i);
                if (i >= n || p[i] != '=')
                        goto fail;
                i++;
                size_t after_eq = i;
                i = skip_fws(p, n, i);

                /* tag-value: tval *(1*(WSP / FWS) tval); the end is the
                 * last VALCHAR before FWS that is followed by ";" or the
                 * end. */
                size_t value_start = i, value_end = i;
                for (;;) {
                        while (i < n && is_valchar((unsigned char) p[i]))
                                i++;
                        value_end = i;
                        size_t j = skip_fws(p, n, i);
                        if (j < n && is_valchar((unsigned char) p[j]) && j > i) {
                                i = j;
                                continue;
                        }
                        i = j;
                        break;
                }

                for (size_t k = 0; k < n_tags; k++)
                        if (tags[k].name_len == name_len && memcmp(tags[k].name, p + name_start, name_len) == 0)
                                goto fail;
                if (n_tags >= DKIM_TAGS_MAX) {
                        r = -E2BIG;
                        goto fail;
                }
                tags[n_tags++] = (DkimTag) {
                        .name = p + name_start,
                        .name_len = name_len,
                        .value = p + value_start,
                        .value_len = value_end - value_start,
                        .after_eq = p + after_eq,
                };

                if (i == n)
                        break;
                if (p[i] != ';')
                        goto fail;
                i = skip_fws(p, n, i + 1);
                if (i == n)
                        break;  /* one trailing ";" */
        }

        *ret = (DkimTagList) { .tags = tags, .n = n_tags };
        return 0;

fail:
        free(tags);
        return r;
}

void dkim_tag_list_done(DkimTagList *l) {
        if (!l)
                return;
        free(l->tags);
        *l = (DkimTagList) {};
}

const DkimTag *dkim_tags_get(const DkimTagList *l, const char *name) {
        size_t len = strlen(name);
        for (size_t i = 0; i < l->n; i++)
                if (l->tags[i].name_len == len && memcmp(l->tags[i].name, name, len) == 0)
                        return &l->tags[i];
        return NULL;
}

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool dkim_tag_value_has_space(const DkimTag *t) {
        for (size_t i = 0; i < t->value_len; i++)
                if (is_space(t->value[i]))
                        return true;
        return false;
}

char *dkim_tag_value_strip(const DkimTag *t) {
        char *s = malloc(t->value_len + 1);
        if (!s)
                return NULL;
        size_t k = 0;
        for (size_t i = 0; i < t->value_len; i++)
                if (!is_space(t->value[i]))
                        s[k++] = t->value[i];
        s[k] = 0;
        return s;
}
