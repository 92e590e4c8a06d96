/* SPDX-License-Identifier: MIT */
#pragma once

/* halyard's configuration: /etc/halyard/halyard.conf plus drop-ins
 * /etc/halyard/halyard.conf.d/NAME.conf (read in lexical order, later files
 * override earlier ones key by key), INI style like systemd's unit files:
 *
 *   # comment        ; comment
 *   [Queue]
 *   MaxSize = 50M
 *   Domains = example.org example.net
 *
 * A service declares the keys it knows (a ConfigKey table per section) and
 * reads typed values; unknown sections or keys give warnings (with file:line),
 * malformed values give errors (with file:line). Nothing here logs: warnings
 * and errors are collected in the ConfigDiag list for the caller to print.
 *
 * Ownership: config_load*() return a new Config freed with config_free();
 * getters return borrowed strings that live as long as the Config. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "macro.h"

typedef struct Config Config;

typedef enum ConfigType {
        CONFIG_STRING,
        CONFIG_BOOL,     /* yes/no, true/false, on/off, 1/0 (any case) */
        CONFIG_UINT,     /* decimal, fits uint64 */
        CONFIG_SIZE,     /* bytes with optional B, K, M, G, T (1024-based, any case, also KiB/KB), e.g. 10M */
        CONFIG_DURATION, /* e.g. 30s, 5min, 2h, 1d, 500ms, or a bare number of seconds; combinations "1h 30min" */
        CONFIG_ADDRESSES,/* whitespace or comma separated list of IPv4/IPv6 addresses or CIDR prefixes */
        CONFIG_LIST,     /* whitespace separated list of words */
        CONFIG_LIST_APPEND, /* the same, but each assignment adds to the list, like systemd's
                             * repeatable settings (joined with ", "); an empty one resets it */
} ConfigType;

typedef struct ConfigKey {
        const char *section; /* "Queue" */
        const char *name;    /* "MaxSize" */
        ConfigType type;
} ConfigKey;

typedef struct ConfigDiag {
        char *file;
        unsigned line;  /* 0: about the whole file or directory (I/O, too many drop-ins) */
        bool error;     /* false: warning */
        char *message;
} ConfigDiag;

typedef struct ConfigAddress {
        int family;          /* AF_INET or AF_INET6 */
        uint8_t addr[16];
        unsigned prefixlen;  /* 32/128 for a single address */
} ConfigAddress;

/* The default main file; HALYARD_CONFIG in the environment overrides it (tests). */
const char *config_default_path(void);

/* Loads path (missing file is fine: empty config) and path + ".d/" + "*.conf".
 * keys is the table of known keys (terminated by an entry with name NULL),
 * used to warn about unknown keys and to check every value's syntax at load
 * time, so a malformed value is an error now, not when first read.
 * Returns 0 if there were no errors (warnings allowed), -EINVAL if any value,
 * line or section was malformed (ret still set so diags can be read, but the
 * caller must not use it as a config), other -errno for I/O failures (ret
 * also set, with a diag naming the file). *ret is NULL only after -ENOMEM or
 * invalid arguments; otherwise the caller frees it with config_free(). */
int config_load(const char *path, const ConfigKey *keys, Config **ret);
/* Same from an in-memory buffer; name is used as the file name in diags. */
int config_load_string(const char *name, const char *text, size_t len, const ConfigKey *keys, Config **ret);
Config *config_free(Config *c);

size_t config_n_diags(const Config *c);
const ConfigDiag *config_diag(const Config *c, size_t i);
/* Writes every diag as "file:line: error: message" / "file:line: warning: message"
 * ("file: error: message" when line is 0). */
void config_print_diags(const Config *c, FILE *f);

/* Typed getters: return 0 and set *ret when the key is set, -ENOENT when it is
 * not set (then *ret is left alone, so callers preset defaults), -EINVAL when
 * the value does not parse as that type. */
int config_get_string(const Config *c, const char *section, const char *name, const char **ret);
int config_get_bool(const Config *c, const char *section, const char *name, bool *ret);
int config_get_uint(const Config *c, const char *section, const char *name, uint64_t *ret);
int config_get_size(const Config *c, const char *section, const char *name, uint64_t *ret);
int config_get_duration(const Config *c, const char *section, const char *name, uint64_t *ret_usec);
/* *ret is a new array freed by the caller with free(). */
int config_get_addresses(const Config *c, const char *section, const char *name, ConfigAddress **ret, size_t *ret_n);
/* *ret is a new NULL-terminated array of new strings; free with config_strv_free(). */
int config_get_list(const Config *c, const char *section, const char *name, char ***ret);
char **config_strv_free(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, config_strv_free);

/* Where the key's effective value came from, for messages: "file:line". */
int config_get_location(const Config *c, const char *section, const char *name, const char **ret_file, unsigned *ret_line);

/* Parsers behind the getters, exposed for other users (command line, policy). */
int config_parse_bool(const char *s, bool *ret);
int config_parse_size(const char *s, uint64_t *ret);
int config_parse_duration(const char *s, uint64_t *ret_usec);
int config_parse_address(const char *s, ConfigAddress *ret);
bool config_address_match(const ConfigAddress *prefix, const struct sockaddr *sa);
