/* SPDX-License-Identifier: MIT */
/* `halyardctl arc …`: halyard-arcd's message authentication.
 *   validate FILE                       the ARC chain of a message
 *   authenticate FILE [--ip IP --helo H --from ADDR]
 *                                       SPF, DKIM, DMARC, ARC and the A-R field
 *   seal FILE [--domain D --selector S] [--auth-results STR]
 *                                       prints the sealed message
 *   sign FILE --domain D [--selector S] [--canonicalization C] [--algorithm A]
 *                                       prints the signed message
 * FILE "-" is standard input. The message travels as a file descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "macro.h"
#include "varlink.h"

/* Seal and Sign wait for DNS and a signature. */
#define ARC_TIMEOUT_USEC (60ULL * 1000000)

static long long get_int(json_object *o, const char *key) {
        return (long long) json_object_get_int64(json_object_object_get(o, key));
}

static const char *get_str(json_object *o, const char *key) {
        const char *s = json_object_get_string(json_object_object_get(o, key));
        return s ? s : "";
}

/* The message as an fd arcd can read from offset 0: the file itself, or
 * standard input copied into a memfd. */
static int open_message(const char *path) {
        if (strcmp(path, "-") != 0) {
                int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        return -errno;
                return fd;
        }
        int fd = memfd_create("halyardctl-message", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        char buf[65536];
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                if (n == 0)
                        break;
                for (ssize_t w = 0; w < n;) {
                        ssize_t k = write(fd, buf + w, (size_t) (n - w));
                        if (k < 0) {
                                int r = -errno;
                                close(fd);
                                return r;
                        }
                        w += k;
                }
        }
        return fd;
}

static int copy_fd_to_stdout(int fd) {
        char buf[65536];
        off_t off = 0;
        fflush(stdout);
        for (;;) {
                ssize_t n = pread(fd, buf, sizeof buf, off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : 0;
                off += n;
                if (fwrite(buf, 1, (size_t) n, stdout) != (size_t) n)
                        return -EIO;
        }
}

static int arc_call(const CtlOptions *o, const char *method, json_object *params, int fd, Varlink **link,
                    json_object **ret) {
        char address[512], full[128];
        const char *error = NULL;
        snprintf(address, sizeof address, "unix:%s/io.halyard.Arc", o->runtime_dir);
        int r = varlink_connect_address(NULL, address, link);
        if (r < 0) {
                fprintf(stderr, "Failed to connect to halyard-arcd (%s): %s\n", address, strerror(-r));
                return CTL_EXIT_NOT_RUNNING;
        }
        varlink_set_timeout(*link, o->timeout_usec > 0 ? o->timeout_usec : ARC_TIMEOUT_USEC);
        if (fd >= 0) {
                /* varlink_push_fd() owns (and closes) the copy. */
                int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (dup < 0 || (r = varlink_push_fd(*link, dup)) < 0) {
                        fprintf(stderr, "Failed to pass the message: %s\n", strerror(dup < 0 ? errno : -r));
                        return CTL_EXIT_FAILURE;
                }
                json_object_object_add(params, "content", json_object_new_int(0));
        }
        snprintf(full, sizeof full, "io.halyard.Arc.%s", method);
        r = varlink_call_sync(*link, full, params, 0, ret, &error);
        if (r < 0) {
                fprintf(stderr, "%s failed: %s\n", method, strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        if (error) {
                const char *short_name = strncmp(error, "io.halyard.Arc.", 15) == 0 ? error + 15 : error;
                if (strcmp(short_name, "NoKey") == 0)
                        fprintf(stderr, "No key configured for %s%s%s\n", get_str(*ret, "domain"),
                                *get_str(*ret, "selector") ? " selector " : "", get_str(*ret, "selector"));
                else if (json_object_object_get(*ret, "reason"))
                        fprintf(stderr, "%s: %s\n", short_name, get_str(*ret, "reason"));
                else
                        fprintf(stderr, "%s failed: %s %s\n", method, error,
                                json_object_to_json_string_ext(*ret, JSON_C_TO_STRING_PLAIN));
                return CTL_EXIT_FAILURE;
        }
        return 0;
}

static void print_chain(json_object *arc) {
        if (!arc) {
                printf("ARC:     not checked\n");
                return;
        }
        const char *reason = get_str(arc, "reason");
        printf("ARC:     %s%s%s%s", get_str(arc, "status"), *reason ? " (" : "", reason, *reason ? ")" : "");
        if (get_int(arc, "sets") > 0)
                printf(", %lld set%s", get_int(arc, "sets"), get_int(arc, "sets") == 1 ? "" : "s");
        if (strcmp(get_str(arc, "status"), "pass") == 0)
                printf(", oldest pass i=%lld", get_int(arc, "oldestPass"));
        if (json_object_get_boolean(json_object_object_get(arc, "temporary")))
                printf(", temporary");
        printf("\n");
        json_object *sets = json_object_object_get(arc, "perSet");
        for (size_t i = 0; sets && i < json_object_array_length(sets); i++) {
                json_object *s = json_object_array_get_idx(sets, i);
                const char *r = get_str(s, "reason");
                printf("  i=%-3lld AMS %-9s AS %-9s %s%s%s\n", get_int(s, "instance"), get_str(s, "amsResult"),
                       get_str(s, "asResult"), get_str(s, "asDomain"), *r ? ": " : "", r);
        }
}

static void print_authentication(json_object *reply) {
        json_object *spf = json_object_object_get(reply, "spf"), *dmarc = json_object_object_get(reply, "dmarc");
        json_object *dkim = json_object_object_get(reply, "dkim");
        if (spf)
                printf("SPF:     %s (%s %s, %lld lookups)%s%s\n", get_str(spf, "result"), get_str(spf, "identity"),
                       get_str(spf, "domain"), get_int(spf, "lookups"), *get_str(spf, "reason") ? ": " : "",
                       get_str(spf, "reason"));
        size_t n = dkim ? json_object_array_length(dkim) : 0;
        if (n == 0)
                printf("DKIM:    none\n");
        for (size_t i = 0; i < n; i++) {
                json_object *d = json_object_array_get_idx(dkim, i);
                const char *reason = get_str(d, "reason");
                printf("DKIM:    %s d=%s s=%s a=%s%s%s\n", get_str(d, "result"), get_str(d, "domain"),
                       get_str(d, "selector"), get_str(d, "algorithm"), *reason ? ": " : "", reason);
        }
        if (dmarc)
                printf("DMARC:   %s (From %s, policy %s)%s%s\n", get_str(dmarc, "result"), get_str(dmarc, "fromDomain"),
                       *get_str(dmarc, "policy") ? get_str(dmarc, "policy") : "none",
                       *get_str(dmarc, "reason") ? ": " : "", get_str(dmarc, "reason"));
        print_chain(json_object_object_get(reply, "arc"));
        printf("Authentication-Results: %s\n", get_str(reply, "header"));
}

static void add_opt(json_object *p, const char *key, const char *v) {
        if (v)
                json_object_object_add(p, key, json_object_new_string(v));
}

int verb_arc(const CtlOptions *o, int argc, char **argv) {
        _cleanup_(varlink_unrefp) Varlink *link = NULL;
        json_object *reply = NULL;
        const char *verb = argc > 0 ? argv[0] : NULL;
        int r;

        if (!verb || argc != 2 || !(strcmp(verb, "validate") == 0 || strcmp(verb, "authenticate") == 0 ||
                                    strcmp(verb, "seal") == 0 || strcmp(verb, "sign") == 0)) {
                fprintf(stderr, "Usage: halyardctl arc validate FILE\n"
                                "       halyardctl arc authenticate FILE [--ip=IP] [--helo=NAME] [--from=ADDRESS]\n"
                                "       halyardctl arc seal FILE [--domain=D] [--selector=S] [--auth-results=TEXT]\n"
                                "       halyardctl arc sign FILE --domain=D [--selector=S] [--canonicalization=C]\n"
                                "                          [--algorithm=A]\n");
                return CTL_EXIT_USAGE;
        }
        if (strcmp(verb, "sign") == 0 && !o->domain) {
                fprintf(stderr, "arc sign needs --domain=DOMAIN\n");
                return CTL_EXIT_USAGE;
        }
        int fd = open_message(argv[1]);
        if (fd < 0) {
                fprintf(stderr, "Failed to open %s: %s\n", argv[1], strerror(-fd));
                return CTL_EXIT_FAILURE;
        }
        json_object *p = json_object_new_object();
        const char *method;
        if (strcmp(verb, "validate") == 0) {
                json_object *checks = json_object_new_array();
                json_object_array_add(checks, json_object_new_string("arc"));
                json_object_object_add(p, "checks", checks);
                method = "Authenticate";
        } else if (strcmp(verb, "authenticate") == 0) {
                add_opt(p, "clientIp", o->arc_ip);
                add_opt(p, "helo", o->arc_helo);
                add_opt(p, "mailFrom", o->arc_from);
                method = "Authenticate";
        } else if (strcmp(verb, "seal") == 0) {
                add_opt(p, "domain", o->domain);
                add_opt(p, "selector", o->arc_selector);
                add_opt(p, "authResults", o->arc_auth_results);
                add_opt(p, "clientIp", o->arc_ip);
                add_opt(p, "helo", o->arc_helo);
                add_opt(p, "mailFrom", o->arc_from);
                method = "Seal";
        } else {
                add_opt(p, "domain", o->domain);
                add_opt(p, "selector", o->arc_selector);
                add_opt(p, "canonicalization", o->arc_canonicalization);
                add_opt(p, "algorithm", o->arc_algorithm);
                method = "Sign";
        }
        r = arc_call(o, method, p, fd, &link, &reply);
        json_object_put(p);
        if (r) {
                close(fd);
                return r;
        }
        if (o->json_set) {
                ctl_print_json(o, reply);
                close(fd);
                return CTL_EXIT_OK;
        }
        r = CTL_EXIT_OK;
        if (strcmp(verb, "validate") == 0) {
                json_object *arc = json_object_object_get(reply, "arc");
                print_chain(arc);
                if (strcmp(get_str(arc, "status"), "fail") == 0)
                        r = CTL_EXIT_FAILURE;
        } else if (strcmp(verb, "authenticate") == 0)
                print_authentication(reply);
        else {
                if (strcmp(verb, "seal") == 0) {
                        json_object *h = json_object_object_get(reply, "headers");
                        for (size_t i = 0; h && i < json_object_array_length(h); i++)
                                fputs(json_object_get_string(json_object_array_get_idx(h, i)), stdout);
                } else
                        fputs(get_str(reply, "header"), stdout);
                if (copy_fd_to_stdout(fd) < 0) {
                        fprintf(stderr, "Failed to read %s again\n", argv[1]);
                        r = CTL_EXIT_FAILURE;
                }
                fflush(stdout);
        }
        close(fd);
        return r;
}
