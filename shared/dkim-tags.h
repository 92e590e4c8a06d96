/* SPDX-License-Identifier: MIT */
#pragma once

/* The tag=value list of RFC 6376 §3.2, used by DKIM-Signature, DKIM key
 * records, ARC-Message-Signature and ARC-Seal.
 *
 * Strict where the RFC is: a tag name is ALPHA *(ALPHA / DIGIT / "_"), a
 * tag appearing twice makes the whole list invalid, an empty tag-spec
 * (";;", a leading ";") is invalid; only one trailing ";" is allowed.
 * Names are case-sensitive. Values are returned without the white space
 * (FWS) around them; white space inside a value is kept (callers decide:
 * base64 values drop it, most others refuse it).
 *
 * Ownership: the list points into the parsed text, which must outlive it;
 * dkim_tag_list_done() frees only the array. */

#include <stdbool.h>
#include <stddef.h>

#define DKIM_TAGS_MAX 64U

typedef struct DkimTag {
        const char *name;
        size_t name_len;
        const char *value;      /* without surrounding FWS */
        size_t value_len;
        const char *after_eq;   /* first byte after the "=" (for erasing b=) */
} DkimTag;

typedef struct DkimTagList {
        DkimTag *tags;
        size_t n;
} DkimTagList;

/* Parses text[0..n). Returns 0, -EINVAL for a syntax error or a duplicate
 * tag, -E2BIG beyond DKIM_TAGS_MAX tags, -ENOMEM. On error *ret is left
 * untouched. */
int dkim_tags_parse(const char *text, size_t n, DkimTagList *ret);
void dkim_tag_list_done(DkimTagList *l);

/* The tag with this exact name, or NULL. */
const DkimTag *dkim_tags_get(const DkimTagList *l, const char *name);

/* True if the value contains white space (SP, HTAB, CR, LF). */
bool dkim_tag_value_has_space(const DkimTag *t);

/* The value with all FWS removed, NUL-terminated and newly allocated
 * (for base64 and colon-separated lists). NULL on OOM. */
char *dkim_tag_value_strip(const DkimTag *t);
