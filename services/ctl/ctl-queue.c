/* SPDX-License-Identifier: MIT */
/* `halyardctl queue …`: the operator's view of halyard-queued, what
 * mailq/postqueue/postsuper are to Postfix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "macro.h"
#include "varlink.h"

static int queue_connect(const CtlOptions *o, Varlink **ret) {
        char address[512];
        snprintf(address, sizeof address, "unix:%s/io.halyard.Queue", o->runtime_dir);
        int r = varlink_connect_address(NULL, address, ret);
        if (r < 0) {
                fprintf(stderr, "Failed to connect to halyard-queued (%s): %s\n", address, strerror(-r));
                return r;
        }
        if (o->timeout_usec > 0)
                varlink_set_timeout(*ret, o->timeout_usec);
        return 0;
}

/* One call; prints failures; 0 or an exit code. */
static int queue_call(const CtlOptions *o, Varlink *link, const char *method, json_object *params, json_object **ret) {
        const char *error = NULL;
        char full[128];
        snprintf(full, sizeof full, "io.halyard.Queue.%s", method);
        int r = varlink_call_sync(link, full, params, 0, ret, &error);
        if (r < 0) {
                fprintf(stderr, "%s failed: %s\n", method, strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        if (error) {
                if (strcmp(error, "io.halyard.Queue.NoSuchMessage") == 0)
                        fprintf(stderr, "No such message: %s\n",
                                json_object_get_string(json_object_object_get(*ret, "queueId")));
                else
                        fprintf(stderr, "%s failed: %s %s\n", method, error,
                                json_object_to_json_string_ext(*ret, JSON_C_TO_STRING_PLAIN));
                return CTL_EXIT_FAILURE;
        }
        return 0;
}

static void print_time(int64_t t) {
        char buf[64];
        time_t tt = (time_t) t;
        struct tm tm;
        strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", gmtime_r(&tt, &tm));
        printf("%s", buf);
}

static void print_message(json_object *msg, bool detailed) {
        json_object *rcpts = json_object_object_get(msg, "recipients");
        const char *sender = json_object_get_string(json_object_object_get(msg, "sender"));
        printf("%-20s %-9s %9lld  ", json_object_get_string(json_object_object_get(msg, "queueId")),
               json_object_get_string(json_object_object_get(msg, "state")),
               (long long) json_object_get_int64(json_object_object_get(msg, "size")));
        print_time(json_object_get_int64(json_object_object_get(msg, "arrivalTime")));
        printf("  <%s>\n", sender && *sender ? sender : "");
        for (size_t i = 0; i < json_object_array_length(rcpts); i++) {
                json_object *rc = json_object_array_get_idx(rcpts, i);
                const char *err = json_object_get_string(json_object_object_get(rc, "lastError"));
                printf("%52s%s (%s", "", json_object_get_string(json_object_object_get(rc, "address")),
                       json_object_get_string(json_object_object_get(rc, "state")));
                if (detailed) {
                        printf(", %d attempts", json_object_get_int(json_object_object_get(rc, "attempts")));
                        /* The policy's choices for it, as stored. */
                        static const char *const choices[][2] = {
                                { "route", "route" }, { "sourceAddress", "from address" },
                                { "sender", "sender" }, { "helo", "EHLO" },
                        };
                        for (size_t k = 0; k < ELEMENTSOF(choices); k++) {
                                const char *v = json_object_get_string(json_object_object_get(rc, choices[k][0]));
                                if (v)
                                        printf(", %s %s", choices[k][1], v);
                        }
                }
                printf(")%s%s\n", err ? ": " : "", err ? err : "");
        }
        json_object *next = json_object_object_get(msg, "nextAttemptTime");
        if (detailed && next) {
                printf("%52snext attempt ", "");
                print_time(json_object_get_int64(next));
                printf("\n");
        }
        json_object *dests = json_object_object_get(msg, "destinations");
        for (size_t i = 0; detailed && i < json_object_array_length(dests); i++) {
                json_object *d = json_object_array_get_idx(dests, i);
                printf("%52sTLS policy for %s: %s\n", "", json_object_get_string(json_object_object_get(d, "domain")),
                       json_object_get_string(json_object_object_get(d, "tlsPolicy")));
        }
}

typedef struct ListState {
        const CtlOptions *o;
        json_object *all;
        unsigned n;
} ListState;

static int list_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        ListState *s = userdata;
        if (error) {
                fprintf(stderr, "List failed: %s\n", error);
                return -EIO;
        }
        json_object *msg = json_object_object_get(p, "message");
        if (!msg)
                return 0;
        s->n++;
        if (s->o->json_set)
                json_object_array_add(s->all, json_object_get(msg));
        else
                print_message(msg, false);
        return 0;
}

static int queue_list(const CtlOptions *o, Varlink *link, int argc, char **argv) {
        if (argc > 0) {
                fprintf(stderr, "Usage: halyardctl queue list [--state=active|deferred|held] [--domain=D] [--sender=S]\n");
                return CTL_EXIT_USAGE;
        }
        json_object *params = json_object_new_object();
        if (o->state)
                json_object_object_add(params, "state", json_object_new_string(o->state));
        if (o->domain)
                json_object_object_add(params, "domain", json_object_new_string(o->domain));
        if (o->sender)
                json_object_object_add(params, "sender", json_object_new_string(o->sender));
        ListState s = { o, json_object_new_array(), 0 };
        if (!o->json_set)
                printf("%-20s %-9s %9s  %-19s  %s\n", "QUEUE ID", "STATE", "SIZE", "ARRIVAL (UTC)", "SENDER / RECIPIENTS");
        int r = varlink_call_more_sync(link, "io.halyard.Queue.List", params, list_reply, &s);
        json_object_put(params);
        if (r == 0 && o->json_set)
                ctl_print_json(o, s.all);
        else if (r == 0)
                printf("-- %u message%s\n", s.n, s.n == 1 ? "" : "s");
        json_object_put(s.all);
        if (r < 0 && r != -EIO)
                fprintf(stderr, "List failed: %s\n", strerror(-r));
        return r < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
}

static int monitor_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        const CtlOptions *o = userdata;
        if (error) {
                fprintf(stderr, "Monitor failed: %s\n", error);
                return -EIO;
        }
        if (o->json_set)
                ctl_print_json(o, p);
        else {
                const char *rcpt = json_object_get_string(json_object_object_get(p, "recipient"));
                const char *detail = json_object_get_string(json_object_object_get(p, "detail"));
                printf("%-10s %s%s%s%s%s\n", json_object_get_string(json_object_object_get(p, "event")),
                       json_object_get_string(json_object_object_get(p, "queueId")), rcpt ? " " : "", rcpt ? rcpt : "",
                       detail ? ": " : "", detail ? detail : "");
        }
        fflush(stdout);
        return 0;
}

int verb_queue(const CtlOptions *o, int argc, char **argv) {
        static const struct {
                const char *verb, *method;
                bool takes_id;
        } simple[] = {
                { "show", "Show", true },     { "hold", "Hold", true },     { "release", "Release", true },
                { "delete", "Delete", true }, { "bounce", "Bounce", true }, { "retry", "Retry", true },
        };
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        json_object *reply;
        int r;

        if (argc < 1) {
                fprintf(stderr, "Usage: halyardctl queue list|show|retry|hold|release|delete|bounce|monitor …\n");
                return CTL_EXIT_USAGE;
        }
        const char *verb = argv[0];
        if (queue_connect(o, &link) < 0)
                return CTL_EXIT_FAILURE;
        if (strcmp(verb, "list") == 0)
                return queue_list(o, link, argc - 1, argv + 1);
        if (strcmp(verb, "monitor") == 0) {
                /* Runs until the service goes away or we are interrupted. */
                varlink_set_timeout(link, 0);
                r = varlink_call_more_sync(link, "io.halyard.Queue.Monitor", NULL, monitor_reply, (void *) o);
                return r < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
        }
        for (size_t i = 0; i < ELEMENTSOF(simple); i++) {
                if (strcmp(verb, simple[i].verb) != 0)
                        continue;
                bool by_domain = strcmp(verb, "retry") == 0 && o->domain;
                if (argc != (by_domain ? 1 : 2)) {
                        fprintf(stderr, "Usage: halyardctl queue %s %s\n", verb,
                                strcmp(verb, "retry") == 0 ? "QUEUE-ID | --domain=DOMAIN" : "QUEUE-ID");
                        return CTL_EXIT_USAGE;
                }
                json_object *params = json_object_new_object();
                if (by_domain)
                        json_object_object_add(params, "domain", json_object_new_string(o->domain));
                else
                        json_object_object_add(params, "queueId", json_object_new_string(argv[1]));
                r = queue_call(o, link, simple[i].method, params, &reply);
                json_object_put(params);
                if (r)
                        return r;
                if (o->json_set)
                        ctl_print_json(o, reply);
                else if (strcmp(verb, "show") == 0)
                        print_message(json_object_object_get(reply, "message"), true);
                else if (strcmp(verb, "retry") == 0)
                        printf("%lld message(s) scheduled now\n", (long long) json_object_get_int64(json_object_object_get(reply, "count")));
                return CTL_EXIT_OK;
        }
        fprintf(stderr, "Unknown queue command: %s\n", verb);
        return CTL_EXIT_USAGE;
}
