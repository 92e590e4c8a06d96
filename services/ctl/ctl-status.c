/* SPDX-License-Identifier: MIT */
/* `halyardctl status`: asks every halyard service for GetStatus at once and
 * prints one table. The services are the known ones plus any other
 * io.halyard.* socket found in the runtime directory. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>

#include "ctl.h"
#include "macro.h"
#include "varlink.h"

#define STATUS_TIMEOUT_USEC (5ULL * 1000000ULL)
#define STATUS_SERVICES_MAX 64

static const struct {
        const char *name, *interface;
} known_services[] = {
        { "smtpd", "io.halyard.Smtpd" },
        { "arcd", "io.halyard.Arc" },
        { "queued", "io.halyard.Queue" },
        { "tlsrptd", "io.halyard.TlsRpt" },
};

typedef enum ServiceState {
        STATE_PENDING,
        STATE_RUNNING,
        STATE_NOT_RUNNING, /* no socket, or nobody listening */
        STATE_NOT_ANSWERING,
        STATE_FAILED,      /* error reply or broken connection */
} ServiceState;

static const char *const state_names[] = {
        [STATE_PENDING] = "pending",
        [STATE_RUNNING] = "running",
        [STATE_NOT_RUNNING] = "not running",
        [STATE_NOT_ANSWERING] = "not answering",
        [STATE_FAILED] = "failed",
};

typedef struct Service {
        char name[64];
        char interface[128];
        char address[512];
        ServiceState state;
        char detail[256];
        json_object *status;
        Varlink *link;
        unsigned *n_pending;
} Service;

static int status_reply(Varlink *link, json_object *p, const char *error, VarlinkReplyFlags flags, void *userdata) {
        Service *s = userdata;

        if (error) {
                s->state = streq_ptr(error, VARLINK_ERROR_TIMEOUT) ? STATE_NOT_ANSWERING : STATE_FAILED;
                snprintf(s->detail, sizeof s->detail, "%s", error);
        } else {
                s->state = STATE_RUNNING;
                s->status = json_object_get(p);
                const char *summary = json_object_get_string(json_object_object_get(p, "summary"));
                snprintf(s->detail, sizeof s->detail, "%s", summary ? summary : "");
        }
        (*s->n_pending)--;
        return 0;
}

static void service_start(Service *s, sd_event *e, uint64_t timeout) {
        struct stat st;
        int r;

        if (stat(s->address + strlen("unix:"), &st) < 0 || !S_ISSOCK(st.st_mode)) {
                s->state = STATE_NOT_RUNNING;
                snprintf(s->detail, sizeof s->detail, "no socket %s", s->address + strlen("unix:"));
                return;
        }
        r = varlink_connect_address(e, s->address, &s->link);
        if (r < 0) {
                s->state = r == -EAGAIN ? STATE_NOT_ANSWERING : STATE_NOT_RUNNING;
                snprintf(s->detail, sizeof s->detail, "connect: %s", strerror(-r));
                return;
        }
        varlink_set_timeout(s->link, timeout);
        char method[160];
        snprintf(method, sizeof method, "%s.GetStatus", s->interface);
        r = varlink_invoke(s->link, method, NULL, 0, status_reply, s);
        if (r < 0) {
                s->state = STATE_FAILED;
                snprintf(s->detail, sizeof s->detail, "call: %s", strerror(-r));
                return;
        }
        (*s->n_pending)++;
}

static bool interface_name_ok(const char *n) {
        if (strncmp(n, "io.halyard.", 11) != 0 || strlen(n) >= 128)
                return false;
        for (const char *p = n; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.'))
                        return false;
        return true;
}

static void add_service(Service *list, size_t *n, const CtlOptions *o, const char *name, const char *interface) {
        if (*n >= STATUS_SERVICES_MAX)
                return;
        for (size_t i = 0; i < *n; i++)
                if (strcmp(list[i].interface, interface) == 0)
                        return;
        Service *s = &list[(*n)++];
        snprintf(s->name, sizeof s->name, "%s", name);
        snprintf(s->interface, sizeof s->interface, "%s", interface);
        snprintf(s->address, sizeof s->address, "unix:%s/%s", o->runtime_dir, interface);
}

static int compare_services(const void *a, const void *b) {
        return strcmp(((const Service *) a)->name, ((const Service *) b)->name);
}

int verb_status(const CtlOptions *o, int argc, char **argv) {
        Service services[STATUS_SERVICES_MAX] = {};
        size_t n = 0;
        unsigned n_pending = 0;
        sd_event *e = NULL;
        int r;

        if (argc > 0) {
                fprintf(stderr, "Usage: halyardctl status\n");
                return CTL_EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(known_services); i++)
                add_service(services, &n, o, known_services[i].name, known_services[i].interface);
        DIR *d = opendir(o->runtime_dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d)))
                        if (de->d_type == DT_SOCK && interface_name_ok(de->d_name)) {
                                /* "io.halyard.Foo" → "foo" */
                                char name[64];
                                snprintf(name, sizeof name, "%s", de->d_name + 11);
                                for (char *p = name; *p; p++)
                                        *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
                                add_service(services, &n, o, name, de->d_name);
                        }
                closedir(d);
        }
        qsort(services + ELEMENTSOF(known_services), n - ELEMENTSOF(known_services), sizeof *services, compare_services);

        r = sd_event_new(&e);
        if (r < 0) {
                fprintf(stderr, "Failed to create event loop: %s\n", strerror(-r));
                return CTL_EXIT_FAILURE;
        }
        for (size_t i = 0; i < n; i++) {
                services[i].n_pending = &n_pending;
                service_start(&services[i], e, o->timeout_usec > 0 ? o->timeout_usec : STATUS_TIMEOUT_USEC);
        }
        /* Each call has its own timeout; the loop ends when all are in. */
        while (n_pending > 0)
                if (sd_event_run(e, UINT64_MAX) < 0)
                        break;

        int ret = CTL_EXIT_OK;
        for (size_t i = 0; i < n; i++) {
                if (services[i].state == STATE_NOT_RUNNING && ret == CTL_EXIT_OK)
                        ret = CTL_EXIT_NOT_RUNNING;
                else if (services[i].state != STATE_RUNNING && services[i].state != STATE_NOT_RUNNING)
                        ret = CTL_EXIT_FAILURE;
        }

        if (o->json_set) {
                json_object *all = json_object_new_array();
                for (size_t i = 0; i < n; i++) {
                        json_object *s = json_object_new_object();
                        json_object_object_add(s, "service", json_object_new_string(services[i].name));
                        json_object_object_add(s, "interface", json_object_new_string(services[i].interface));
                        json_object_object_add(s, "address", json_object_new_string(services[i].address));
                        json_object_object_add(s, "state", json_object_new_string(state_names[services[i].state]));
                        if (services[i].status)
                                json_object_object_add(s, "status", json_object_get(services[i].status));
                        else
                                json_object_object_add(s, "detail", json_object_new_string(services[i].detail));
                        json_object_array_add(all, s);
                }
                ctl_print_json(o, all);
                json_object_put(all);
        } else {
                printf("%-10s %-14s %s\n", "SERVICE", "STATE", "DETAIL");
                for (size_t i = 0; i < n; i++)
                        printf("%-10s %-14s %s\n", services[i].name, state_names[services[i].state], services[i].detail);
        }

        for (size_t i = 0; i < n; i++) {
                varlink_unref(services[i].link);
                json_object_put(services[i].status);
        }
        sd_event_unref(e);
        return ret;
}
