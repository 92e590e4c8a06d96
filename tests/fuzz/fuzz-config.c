/* SPDX-License-Identifier: MIT */
/* Fuzzes the configuration parser: the input is one file for
 * config_load_string() against a table with a key of every type, then every
 * getter runs on every key (also against the "wrong" type) and every parsed
 * address is matched against a few peers. Short inputs also go straight to
 * the typed parsers. Everything is freed: a leak is a finding. */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ConfigKey keys[] = {
        { "Queue", "MaxSize", CONFIG_SIZE },
        { "Queue", "Lifetime", CONFIG_DURATION },
        { "Queue", "Workers", CONFIG_UINT },
        { "Queue", "Directory", CONFIG_STRING },
        { "Smtpd", "Banner", CONFIG_STRING },
        { "Smtpd", "RequireTLS", CONFIG_BOOL },
        { "Smtpd", "Relay", CONFIG_ADDRESSES },
        { "Smtpd", "Domains", CONFIG_LIST },
        { "Smtpd", "Timeout", CONFIG_DURATION },
        { "Smtpd", "MaxRecipients", CONFIG_UINT },
        {}
};

static void match_peers(const ConfigAddress *a) {
        struct sockaddr_in sin = { .sin_family = AF_INET };
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
        volatile bool sink;

        memcpy(&sin.sin_addr, a->addr, 4);
        sink = config_address_match(a, (const struct sockaddr *) &sin);
        memcpy(&sin6.sin6_addr, a->addr, 16);
        sink = config_address_match(a, (const struct sockaddr *) &sin6);
        /* The same bytes as a v4-mapped peer. */
        memset(&sin6.sin6_addr, 0, 10);
        memset((uint8_t *) &sin6.sin6_addr + 10, 0xff, 2);
        memcpy((uint8_t *) &sin6.sin6_addr + 12, a->addr, 4);
        sink = config_address_match(a, (const struct sockaddr *) &sin6);
        (void) sink;
}

static void exercise(const Config *c) {
        FILE *devnull;

        for (const ConfigKey *k = keys; k->name; k++) {
                const char *s, *file;
                unsigned line;
                uint64_t u;
                bool b;
                ConfigAddress *a;
                size_t n;
                char **l;

                (void) config_get_string(c, k->section, k->name, &s);
                (void) config_get_bool(c, k->section, k->name, &b);
                (void) config_get_uint(c, k->section, k->name, &u);
                (void) config_get_size(c, k->section, k->name, &u);
                (void) config_get_duration(c, k->section, k->name, &u);
                (void) config_get_location(c, k->section, k->name, &file, &line);
                if (config_get_addresses(c, k->section, k->name, &a, &n) >= 0) {
                        for (size_t i = 0; i < n; i++)
                                match_peers(a + i);
                        free(a);
                }
                if (config_get_list(c, k->section, k->name, &l) >= 0)
                        config_strv_free(l);
        }

        for (size_t i = 0; i < config_n_diags(c); i++) {
                const ConfigDiag *d = config_diag(c, i);

                if (!d || !d->file || !d->message)
                        abort();
        }
        devnull = fopen("/dev/null", "we");
        if (devnull) {
                config_print_diags(c, devnull);
                fclose(devnull);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Config *c = NULL;

        if (config_load_string("fuzz.conf", (const char *) data, size, keys, &c) != -ENOMEM && !c)
                abort();  /* only -ENOMEM may leave no Config */
        exercise(c);
        config_free(c);

        /* The typed parsers on their own, as other callers (command line) use them. */
        if (size < 256) {
                char s[256];
                ConfigAddress a;
                uint64_t u;
                bool b;

                memcpy(s, data, size);
                s[size] = '\0';
                (void) config_parse_bool(s, &b);
                (void) config_parse_size(s, &u);
                (void) config_parse_duration(s, &u);
                if (config_parse_address(s, &a) >= 0)
                        match_peers(&a);
        }
        return 0;
}
