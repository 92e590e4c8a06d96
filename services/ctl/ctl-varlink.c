/* SPDX-License-Identifier: MIT */
/* The generic varlink verbs, shaped after systemd's varlinkctl so that
 * operators' habits and scripts carry over. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "macro.h"
#include "varlink.h"
#include "varlink-idl.h"

void ctl_print_json(const CtlOptions *o, json_object *v) {
        bool pretty = o->json == JSON_PRETTY || (o->json == JSON_AUTO && isatty(STDOUT_FILENO));
        int flags = JSON_C_TO_STRING_NOSLASHESCAPE | (pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN);
        printf("%s\n", v ? json_object_to_json_string_ext(v, flags) : "{}");
}

static int ctl_connect(const CtlOptions *o, const char *address, Varlink **ret) {
        int r = varlink_connect_address(NULL, address, ret);
        if (r == -EPROTONOSUPPORT) {
                fprintf(stderr, "Unsupported address '%s': use unix:/path or a path.\n", address);
                return r;
        }
        if (r < 0) {
                fprintf(stderr, "Failed to connect to %s: %s\n", address, strerror(-r));
                return r;
        }
        if (o->timeout_usec > 0)
                varlink_set_timeout(*ret, o->timeout_usec);
        return 0;
}

static const char *local_error_text(int r) {
        switch (r) {
        case -ETIMEDOUT:
                return "timed out waiting for a reply";
        case -EMSGSIZE:
                return "reply exceeds the message size limit";
        case -EBADMSG:
                return "protocol error (malformed reply)";
        case -ECONNRESET:
                return "connection closed by the service";
        default:
                return strerror(-r);
        }
}

/* Calls method; prints local failures and error replies. Returns 0 on a
 * successful reply (*ret borrowed from link), else an exit code. */
static int simple_call(const CtlOptions *o, Varlink *link, const char *method, json_object *params, json_object **ret) {
        const char *error = NULL;
        int r = varlink_call_sync(link, method, params, 0, ret, &error);
        if (r < 0) {
                fprintf(stderr, "Method call %s() failed: %s\n", method, local_error_text(r));
                return CTL_EXIT_FAILURE;
        }
        if (error) {
                fprintf(stderr, "Method call %s() failed: %s\n", method, error);
                return CTL_EXIT_FAILURE;
        }
        return 0;
}

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The sorted interface names from GetInfo's reply (borrowed strings). */
static int sorted_interfaces(json_object *info, const char ***ret, size_t *ret_n) {
        json_object *ifs = json_object_object_get(info, "interfaces");
        size_t n = 0, max = json_object_is_type(ifs, json_type_array) ? json_object_array_length(ifs) : 0;
        const char **l = calloc(max + 1, sizeof *l);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < max; i++) {
                json_object *v = json_object_array_get_idx(ifs, i);
                if (json_object_is_type(v, json_type_string))
                        l[n++] = json_object_get_string(v);
        }
        qsort(l, n, sizeof *l, strcmp_ptr);
        *ret = l;
        *ret_n = n;
        return 0;
}

static int need_args(int argc, int min, int max, const char *usage) {
        if (argc < min || (max >= 0 && argc > max)) {
                fprintf(stderr, "Usage: halyardctl %s\n", usage);
                return CTL_EXIT_USAGE;
        }
        return 0;
}

int verb_info(const CtlOptions *o, int argc, char **argv) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        json_object *info;
        int r;

        if ((r = need_args(argc, 1, 1, "info ADDRESS")))
                return r;
        if (ctl_connect(o, argv[0], &link) < 0)
                return CTL_EXIT_FAILURE;
        if ((r = simple_call(o, link, "org.varlink.service.GetInfo", NULL, &info)))
                return r;
        if (o->json_set) {
                ctl_print_json(o, info);
                return CTL_EXIT_OK;
        }
        static const char *const keys[][2] = {
                { "vendor", "    Vendor" }, { "product", "   Product" }, { "version", "   Version" }, { "url", "       URL" },
        };
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
        {
                /* Other implementations leave empty fields out. */
                const char *v = json_object_get_string(json_object_object_get(info, keys[i][0]));
                printf("%s: %s\n", keys[i][1], v ? v : "");
        }
        _cleanup_free_ const char **l = NULL;
        size_t n;
        if (sorted_interfaces(info, &l, &n) < 0)
                return CTL_EXIT_FAILURE;
        for (size_t i = 0; i < n; i++)
                printf("%s %s\n", i == 0 ? "Interfaces:" : "           ", l[i]);
        return CTL_EXIT_OK;
}

int verb_list_interfaces(const CtlOptions *o, int argc, char **argv) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        json_object *info;
        int r;

        if ((r = need_args(argc, 1, 1, "list-interfaces ADDRESS")))
                return r;
        if (ctl_connect(o, argv[0], &link) < 0)
                return CTL_EXIT_FAILURE;
        if ((r = simple_call(o, link, "org.varlink.service.GetInfo", NULL, &info)))
                return r;
        _cleanup_free_ const char **l = NULL;
        size_t n;
        if (sorted_interfaces(info, &l, &n) < 0)
                return CTL_EXIT_FAILURE;
        if (o->json_set) {
                json_object *a = json_object_new_array();
                for (size_t i = 0; i < n; i++)
                        json_object_array_add(a, json_object_new_string(l[i]));
                ctl_print_json(o, a);
                json_object_put(a);
                return CTL_EXIT_OK;
        }
        for (size_t i = 0; i < n; i++)
                printf("%s\n", l[i]);
        return CTL_EXIT_OK;
}

int verb_introspect(const CtlOptions *o, int argc, char **argv) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        _cleanup_free_ const char **names = NULL;
        json_object *reply;
        size_t n;
        int r;

        if ((r = need_args(argc, 1, -1, "introspect ADDRESS [INTERFACE…]")))
                return r;
        if (ctl_connect(o, argv[0], &link) < 0)
                return CTL_EXIT_FAILURE;

        json_object *info_copy = NULL;
        if (argc > 1) {
                names = calloc((size_t) argc, sizeof *names);
                if (!names)
                        return CTL_EXIT_FAILURE;
                for (int i = 1; i < argc; i++)
                        names[i - 1] = argv[i];
                n = (size_t) argc - 1;
        } else {
                /* All of them, as varlinkctl does when given none. */
                if ((r = simple_call(o, link, "org.varlink.service.GetInfo", NULL, &reply)))
                        return r;
                /* The reply is only valid until the next call: keep a reference. */
                info_copy = json_object_get(reply);
                if (sorted_interfaces(info_copy, &names, &n) < 0) {
                        json_object_put(info_copy);
                        return CTL_EXIT_FAILURE;
                }
        }

        int ret = CTL_EXIT_OK;
        json_object *all = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
                json_object *p = json_object_new_object();
                json_object_object_add(p, "interface", json_object_new_string(names[i]));
                r = simple_call(o, link, "org.varlink.service.GetInterfaceDescription", p, &reply);
                json_object_put(p);
                if (r) {
                        ret = r;
                        break;
                }
                const char *text = json_object_get_string(json_object_object_get(reply, "description"));
                /* Check that what the service claims is valid IDL, as varlinkctl
                 * does by parsing it. */
                VarlinkIdl *idl = NULL;
                VarlinkIdlError err = { 0 };
                if (varlink_idl_parse(text, &idl, &err) < 0) {
                        fprintf(stderr, "Interface %s: invalid description at %u:%u: %s\n", names[i], err.line, err.column, err.message);
                        ret = CTL_EXIT_FAILURE;
                        break;
                }
                varlink_idl_free(idl);
                if (o->json_set)
                        json_object_array_add(all, json_object_get(reply));
                else
                        printf("%s%s%s", i > 0 ? "\n" : "", text, text[0] && text[strlen(text) - 1] == '\n' ? "" : "\n");
        }
        if (ret == CTL_EXIT_OK && o->json_set)
                ctl_print_json(o, all);
        json_object_put(all);
        json_object_put(info_copy);
        return ret;
}

typedef struct MoreState {
        const CtlOptions *o;
        const char *method;
        bool failed;
} MoreState;

static int more_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        MoreState *m = userdata;
        if (error) {
                fprintf(stderr, "Method call %s() failed: %s\n", m->method, error);
                m->failed = true;
        }
        if (!m->o->quiet) {
                /* JSON-SEQ (RFC 7464), as varlinkctl prints --more output. */
                fputc(0x1e, stdout);
                CtlOptions short_json = *m->o;
                short_json.json = JSON_SHORT;
                ctl_print_json(&short_json, p);
                fflush(stdout);
        }
        return 0;
}

static int read_stdin(char **ret) {
        size_t n = 0, cap = 0;
        char *buf = NULL;
        for (;;) {
                if (cap - n < 4096) {
                        if (cap > 16 * 1024 * 1024) {
                                free(buf);
                                return -EFBIG;
                        }
                        cap = cap ? cap * 2 : 8192;
                        char *nb = realloc(buf, cap);
                        if (!nb) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = nb;
                }
                ssize_t k = read(STDIN_FILENO, buf + n, cap - n - 1);
                if (k < 0) {
                        free(buf);
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = 0;
        *ret = buf;
        return 0;
}

int verb_call(const CtlOptions *o, int argc, char **argv) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        _cleanup_free_ char *input = NULL;
        int r;

        if ((r = need_args(argc, 2, 3, "call ADDRESS METHOD [JSON]")))
                return r;
        const char *method = argv[1], *text = argc > 2 ? argv[2] : NULL;
        if (!text) {
                if (read_stdin(&input) < 0) {
                        fprintf(stderr, "Failed to read parameters from standard input.\n");
                        return CTL_EXIT_FAILURE;
                }
                text = input;
        }
        json_tokener *tok = json_tokener_new();
        json_object *params = json_tokener_parse_ex(tok, text, (int) strlen(text));
        bool ok = json_tokener_get_error(tok) == json_tokener_success && params &&
                  json_object_is_type(params, json_type_object);
        if (ok) {
                /* Only whitespace may follow the object. */
                for (const char *p = text + json_tokener_get_parse_end(tok); *p; p++)
                        if (!strchr(" \t\r\n", *p))
                                ok = false;
        }
        json_tokener_free(tok);
        if (!ok) {
                fprintf(stderr, "Parameters must be a JSON object: %s\n", text);
                json_object_put(params);
                return CTL_EXIT_USAGE;
        }

        if (ctl_connect(o, argv[0], &link) < 0) {
                json_object_put(params);
                return CTL_EXIT_FAILURE;
        }

        if (o->more) {
                MoreState m = { o, method, false };
                r = varlink_call_more_sync(link, method, params, more_reply, &m);
                json_object_put(params);
                if (r < 0) {
                        fprintf(stderr, "Method call %s() failed: %s\n", method, local_error_text(r));
                        return CTL_EXIT_FAILURE;
                }
                return m.failed ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
        }

        json_object *reply = NULL;
        const char *error = NULL;
        r = varlink_call_sync(link, method, params, o->oneway ? VARLINK_CALL_ONEWAY : 0, &reply, &error);
        json_object_put(params);
        if (r < 0) {
                fprintf(stderr, "Method call %s() failed: %s\n", method, local_error_text(r));
                return CTL_EXIT_FAILURE;
        }
        if (o->oneway)
                return CTL_EXIT_OK;
        if (error)
                fprintf(stderr, "Method call %s() failed: %s\n", method, error);
        if (!o->quiet)
                ctl_print_json(o, reply);
        return error ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
}
