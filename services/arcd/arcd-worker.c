/* SPDX-License-Identifier: MIT */
/* The signing thread pool, after smtpd-auth.c's password verifier: workers
 * take jobs from a queue under a mutex, put finished ones on a done list and
 * poke an eventfd; the loop drains the done list and runs the callbacks, so
 * every varlink reply is sent from the loop thread. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "arcd.h"
#include "macro.h"

#define WORKER_THREADS_MAX 8

typedef struct WorkItem {
        struct WorkItem *next;
        WorkerFn work;
        WorkerDoneFn done;
        void *userdata;
        int result;
} WorkItem;

struct Worker {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t threads[WORKER_THREADS_MAX];
        unsigned n_threads;
        bool stopping;
        WorkItem *queue_head, *queue_tail;
        WorkItem *done_head, *done_tail;
        size_t n_items, max_pending;
        int event_fd;
        sd_event_source *source;
};

static void list_append(WorkItem **head, WorkItem **tail, WorkItem *i) {
        i->next = NULL;
        if (*tail)
                (*tail)->next = i;
        else
                *head = i;
        *tail = i;
}

static void *worker_thread(void *userdata) {
        Worker *w = userdata;
        for (;;) {
                pthread_mutex_lock(&w->lock);
                while (!w->queue_head && !w->stopping)
                        pthread_cond_wait(&w->cond, &w->lock);
                if (w->stopping) {
                        pthread_mutex_unlock(&w->lock);
                        return NULL;
                }
                WorkItem *i = w->queue_head;
                w->queue_head = i->next;
                if (!w->queue_head)
                        w->queue_tail = NULL;
                pthread_mutex_unlock(&w->lock);

                i->result = i->work(i->userdata);

                pthread_mutex_lock(&w->lock);
                list_append(&w->done_head, &w->done_tail, i);
                pthread_mutex_unlock(&w->lock);
                uint64_t one = 1;
                while (write(w->event_fd, &one, sizeof one) < 0 && errno == EINTR)
                        ;
        }
}

static void dispatch(Worker *w, WorkItem *list, int force) {
        while (list) {
                WorkItem *i = list;
                list = i->next;
                w->n_items--;
                i->done(force ? force : i->result, i->userdata);
                free(i);
        }
}

static int on_event(sd_event_source *s _unused_, int fd, uint32_t revents _unused_, void *userdata) {
        Worker *w = userdata;
        uint64_t x;
        (void) !read(fd, &x, sizeof x);
        pthread_mutex_lock(&w->lock);
        WorkItem *list = w->done_head;
        w->done_head = w->done_tail = NULL;
        pthread_mutex_unlock(&w->lock);
        dispatch(w, list, 0);
        return 0;
}

int worker_new(sd_event *e, unsigned n_threads, size_t max_pending, Worker **ret) {
        sigset_t all, old;
        int r;

        if (n_threads == 0 || n_threads > WORKER_THREADS_MAX)
                return -EINVAL;
        Worker *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->max_pending = max_pending;
        w->event_fd = -1;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        w->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w->event_fd < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(e, &w->source, w->event_fd, EPOLLIN, on_event, w);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(w->source, "arcd-worker");
        /* Signals stay with the loop thread. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        for (unsigned i = 0; i < n_threads; i++) {
                r = pthread_create(&w->threads[i], NULL, worker_thread, w);
                if (r != 0)
                        break;
                w->n_threads++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (w->n_threads == 0) {
                r = -r;
                goto fail;
        }
        *ret = w;
        return 0;
fail:
        worker_free(w);
        return r;
}

Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        for (unsigned i = 0; i < w->n_threads; i++)
                (void) pthread_join(w->threads[i], NULL);
        WorkItem *done = w->done_head, *queued = w->queue_head;
        w->done_head = w->done_tail = w->queue_head = w->queue_tail = NULL;
        dispatch(w, done, 0);
        dispatch(w, queued, -ECANCELED);
        w->source = sd_event_source_disable_unref(w->source);
        safe_close(w->event_fd);
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w);
        return NULL;
}

int worker_submit(Worker *w, WorkerFn work, WorkerDoneFn done, void *userdata) {
        if (w->n_items >= w->max_pending)
                return -EBUSY;
        WorkItem *i = calloc(1, sizeof *i);
        if (!i)
                return -ENOMEM;
        i->work = work;
        i->done = done;
        i->userdata = userdata;
        pthread_mutex_lock(&w->lock);
        list_append(&w->queue_head, &w->queue_tail, i);
        w->n_items++;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        return 0;
}
