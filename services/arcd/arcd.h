/* SPDX-License-Identifier: MIT */
#pragma once

#include <gnutls/abstract.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "arc.h"
#include "config.h"
#include "daemon.h"
#include "dkim.h"
#include "dns.h"
#include "varlink.h"

#define ARCD_DEFAULT_MAX_MESSAGE_SIZE (64ULL * 1024 * 1024)
#define ARCD_KEY_PEM_MAX (64U * 1024U)
#define ARCD_CACHE_MAX 4096U
#define ARCD_CACHE_TTL_MAX (86400U)
#define ARCD_WORKER_THREADS 2U
#define ARCD_WORKER_MAX_PENDING 4096U

typedef struct ArcdKey {
        char *domain;
        char *selector;
        char *credential;
        gnutls_privkey_t key;
        DkimAlgorithm algorithm;
        unsigned bits;
} ArcdKey;

/* Refcounted: a call in flight (maybe signing on a worker thread) keeps the
 * keys it started with across a reload. */
typedef struct Settings {
        unsigned n_ref;
        char *authserv_id;
        ArcdKey *keys;
        size_t n_keys;
        char *seal_domain, *seal_selector;
        unsigned min_rsa_bits;
        uint64_t max_message_size;
} Settings;

typedef enum ArcdMethod {
        ARCD_METHOD_AUTHENTICATE,
        ARCD_METHOD_SEAL,
        ARCD_METHOD_SIGN,
        ARCD_METHOD_GET_STATUS,
        _ARCD_METHOD_MAX,
} ArcdMethod;

typedef struct DnsCache DnsCache;
typedef struct Worker Worker;
typedef struct Job Job;

typedef struct Manager {
        sd_event *event;
        Daemon *daemon;
        VarlinkServer *varlink;
        Config *config;
        const char *config_path;
        Settings *settings;

        DnsResolver *resolver;
        DnsCache *cache;
        Worker *worker;
        void *psl; /* DmarcPsl, when DMARC is built in */

        uint64_t calls[_ARCD_METHOD_MAX], failures[_ARCD_METHOD_MAX];
        uint64_t dns_queries, dns_cache_hits;
        unsigned in_flight;
        Job *jobs;      /* in flight, for shutdown */
} Manager;

extern const ConfigKey arcd_config_keys[];

/* main.c */
Settings *settings_ref(Settings *s);
Settings *settings_unref(Settings *s);
/* selector NULL: the domain's first key. */
/* The first key of domain (and selector, when not NULL) whose algorithm is
 * algorithm, or any when that is _DKIM_ALGORITHM_INVALID. */
const ArcdKey *settings_find_key(const Settings *s, const char *domain, const char *selector, DkimAlgorithm algorithm);

/* arcd-dns.c: a TTL-honouring cache of DNS answers in front of the resolver. */
int dns_cache_new(size_t max, DnsCache **ret);
DnsCache *dns_cache_free(DnsCache *c);
/* A cached answer (borrowed until the next cache call) or NULL. */
const DnsResult *dns_cache_get(DnsCache *c, const char *name, uint16_t type, uint64_t now_usec);
int dns_cache_put(DnsCache *c, const DnsResult *r, uint64_t now_usec);
size_t dns_cache_size(DnsCache *c);

/* arcd-worker.c: a small thread pool for the signing calls. work() runs on a
 * worker thread, done() on the loop afterwards (with -ECANCELED when the
 * pool is freed before the work started). */
typedef int (*WorkerFn)(void *userdata);
typedef void (*WorkerDoneFn)(int result, void *userdata);
int worker_new(sd_event *e, unsigned n_threads, size_t max_pending, Worker **ret);
Worker *worker_free(Worker *w);
int worker_submit(Worker *w, WorkerFn work, WorkerDoneFn done, void *userdata);

/* arcd-varlink.c */
int arcd_varlink_setup(Manager *m);
/* Frees every call in flight (unanswered): at exit, after worker_free(). */
void arcd_jobs_abort(Manager *m);
/* The Public Suffix List for DMARC (a no-op without DMARC). */
int arcd_psl_setup(Manager *m);
void arcd_psl_free(Manager *m);
