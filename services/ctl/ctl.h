/* SPDX-License-Identifier: MIT */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum JsonMode {
        JSON_AUTO,   /* pretty on a terminal, one line otherwise */
        JSON_SHORT,
        JSON_PRETTY,
} JsonMode;

/* Parsed command line; the only process-wide state halyardctl has. */
typedef struct CtlOptions {
        bool more;
        bool oneway;
        bool quiet;
        bool json_set;
        JsonMode json;
        uint64_t timeout_usec;
        const char *runtime_dir;
        /* queue list/retry filters */
        const char *state, *domain, *sender;
        /* arc authenticate/seal/sign */
        const char *arc_ip, *arc_helo, *arc_from, *arc_selector, *arc_auth_results;
        const char *arc_canonicalization, *arc_algorithm;
} CtlOptions;

/* Exit codes. */
#define CTL_EXIT_OK 0
#define CTL_EXIT_FAILURE 1
#define CTL_EXIT_USAGE 2
#define CTL_EXIT_NOT_RUNNING 3

int verb_info(const CtlOptions *o, int argc, char **argv);
int verb_list_interfaces(const CtlOptions *o, int argc, char **argv);
int verb_introspect(const CtlOptions *o, int argc, char **argv);
int verb_call(const CtlOptions *o, int argc, char **argv);
int verb_status(const CtlOptions *o, int argc, char **argv);
int verb_queue(const CtlOptions *o, int argc, char **argv);
int verb_tlsrpt(const CtlOptions *o, int argc, char **argv);
int verb_policy(const CtlOptions *o, int argc, char **argv);
int verb_arc(const CtlOptions *o, int argc, char **argv);

/* Prints a JSON value the way --json asks, followed by a newline. */
void ctl_print_json(const CtlOptions *o, json_object *v);
