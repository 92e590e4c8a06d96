/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "daemon.h"
#include "varlink.h"

/* The one context struct: all of the service's state. */
typedef struct Manager {
        sd_event *event;
        Daemon *daemon;
        VarlinkServer *varlink;
        Config *config;
        const char *config_path;
        char *greeting;
        bool secret_loaded;
        uint64_t started_usec;
        sd_event_source *drain_timer;
} Manager;

extern const ConfigKey testd_config_keys[];

/* Loads and checks the configuration; on success applies it to m. On
 * failure prints the diagnostics and leaves m as it was. */
int manager_load_config(Manager *m, const char *path);

int testd_varlink_setup(Manager *m);
