/* SPDX-License-Identifier: MIT */
/* The in-memory message table: an ordered tree by queue id (ids sort by
 * arrival), state counters, delivery-rate counters and Monitor events. */
#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "macro.h"
#include "queued.h"

static const char *const state_names[_MESSAGE_STATE_MAX] = {
        [MESSAGE_ACTIVE] = "active",
        [MESSAGE_DEFERRED] = "deferred",
        [MESSAGE_HELD] = "held",
};

static const char *const event_names[_EVENT_MAX] = {
        [EVENT_ACCEPTED] = "accepted", [EVENT_DELIVERED] = "delivered", [EVENT_DEFERRED] = "deferred",
        [EVENT_BOUNCED] = "bounced",   [EVENT_EXPIRED] = "expired",     [EVENT_DELETED] = "deleted",
        [EVENT_HELD] = "held",         [EVENT_RELEASED] = "released",
};

const char *message_state_to_string(MessageState s) {
        return s >= 0 && s < _MESSAGE_STATE_MAX ? state_names[s] : NULL;
}

int message_state_from_string(const char *s) {
        for (int i = 0; i < _MESSAGE_STATE_MAX; i++)
                if (streq_ptr(s, state_names[i]))
                        return i;
        return -EINVAL;
}

const char *queue_event_to_string(QueueEvent e) {
        return e >= 0 && e < _EVENT_MAX ? event_names[e] : NULL;
}

static int compare_ids(const void *a, const void *b) {
        return strcmp(((const Message *) a)->id, ((const Message *) b)->id);
}

static void message_free(void *p) {
        Message *msg = p;
        if (!msg)
                return;
        json_object_put(msg->envelope);
        free(msg);
}

/* The shape the rest of queued relies on; anything else (a hand-edited or
 * foreign envelope) is refused rather than trusted. */
static bool envelope_ok(json_object *env) {
        json_object *rcpts = json_object_object_get(env, "recipients");
        if (!json_object_is_type(json_object_object_get(env, "sender"), json_type_string) ||
            !json_object_is_type(rcpts, json_type_array) || json_object_array_length(rcpts) == 0)
                return false;
        for (size_t i = 0; i < json_object_array_length(rcpts); i++) {
                json_object *rc = json_object_array_get_idx(rcpts, i);
                if (!json_object_is_type(json_object_object_get(rc, "address"), json_type_string) ||
                    !json_object_is_type(json_object_object_get(rc, "state"), json_type_string))
                        return false;
        }
        return true;
}

int queue_add(Manager *m, const char *id, json_object *envelope, uint64_t size, Message **ret) {
        if (!envelope_ok(envelope))
                return -EBADMSG;
        Message *msg = calloc(1, sizeof *msg);
        if (!msg)
                return -ENOMEM;
        if (strlen(id) >= sizeof msg->id) {
                free(msg);
                return -EINVAL;
        }
        strcpy(msg->id, id);
        msg->envelope = json_object_get(envelope);
        msg->size = size;
        msg->arrival = (uint64_t) json_object_get_int64(json_object_object_get(envelope, "arrival"));
        msg->next_attempt = (uint64_t) json_object_get_int64(json_object_object_get(envelope, "nextAttempt"));
        int st = message_state_from_string(json_object_get_string(json_object_object_get(envelope, "state")));
        msg->state = st < 0 ? MESSAGE_ACTIVE : (MessageState) st;

        Message **slot = tsearch(msg, &m->messages, compare_ids);
        if (!slot) {
                message_free(msg);
                return -ENOMEM;
        }
        if (*slot != msg) {
                message_free(msg);
                return -EEXIST;
        }
        m->n_messages[msg->state]++;
        if (ret)
                *ret = msg;
        return 0;
}

Message *queue_find(Manager *m, const char *id) {
        Message key;
        if (!id || strlen(id) >= sizeof key.id)
                return NULL;
        strcpy(key.id, id);
        Message **slot = tfind(&key, &m->messages, compare_ids);
        return slot ? *slot : NULL;
}

void queue_set_state(Manager *m, Message *msg, MessageState state) {
        if (msg->state == state)
                return;
        m->n_messages[msg->state]--;
        m->n_messages[state]++;
        msg->state = state;
        json_object_object_add(msg->envelope, "state", json_object_new_string(state_names[state]));
}

int queue_remove(Manager *m, Message *msg) {
        m->n_messages[msg->state]--;
        tdelete(msg, &m->messages, compare_ids);
        message_free(msg);
        return 0;
}

typedef struct Walk {
        Manager *m;
        int (*fn)(Manager *m, Message *msg, void *userdata);
        void *userdata;
        int result;
} Walk;

static void walk_action(const void *nodep, VISIT which, void *closure) {
        Walk *w = closure;
        if (w->result < 0 || (which != postorder && which != leaf))
                return;
        int r = w->fn(w->m, *(Message *const *) nodep, w->userdata);
        if (r < 0)
                w->result = r;
}

int queue_foreach(Manager *m, int (*fn)(Manager *m, Message *msg, void *userdata), void *userdata) {
        Walk w = { m, fn, userdata, 0 };
        twalk_r(m->messages, walk_action, &w);
        return w.result;
}

void queue_free_all(Manager *m) {
        tdestroy(m->messages, message_free);
        m->messages = NULL;
        memset(m->n_messages, 0, sizeof m->n_messages);
}

/* Counters per minute in a ring over the last hour. */
static unsigned rate_slot(Manager *m, uint64_t minute) {
        unsigned slot = (unsigned) (minute % RATE_SLOTS);
        if (m->rate_minute[slot] != minute) {
                m->rate_minute[slot] = minute;
                m->delivered[slot] = m->bounced[slot] = 0;
        }
        return slot;
}

void queue_count_rate(Manager *m, QueueEvent ev, uint64_t now_sec, uint64_t *ret_last_minute, uint64_t *ret_last_hour) {
        uint64_t minute = now_sec / 60, hour = 0;
        const uint64_t *counts = ev == EVENT_DELIVERED ? m->delivered : m->bounced;
        unsigned now_slot = rate_slot(m, minute);
        for (unsigned i = 0; i < RATE_SLOTS; i++)
                if (m->rate_minute[i] + RATE_SLOTS > minute)
                        hour += counts[i];
        *ret_last_minute = counts[now_slot];
        *ret_last_hour = hour;
}

void queue_event(Manager *m, QueueEvent ev, const Message *msg, const char *recipient, const char *detail) {
        if (ev == EVENT_DELIVERED || ev == EVENT_BOUNCED) {
                unsigned slot = rate_slot(m, (uint64_t) time(NULL) / 60);
                (ev == EVENT_DELIVERED ? m->delivered : m->bounced)[slot]++;
        }
        if (m->n_monitors == 0)
                return;
        json_object *p = json_object_new_object();
        if (!p)
                return;
        json_object_object_add(p, "event", json_object_new_string(event_names[ev]));
        json_object_object_add(p, "queueId", json_object_new_string(msg->id));
        if (recipient)
                json_object_object_add(p, "recipient", json_object_new_string(recipient));
        if (detail)
                json_object_object_add(p, "detail", json_object_new_string(detail));
        for (unsigned i = 0; i < m->n_monitors; i++)
                (void) varlink_notify(m->monitors[i], p);
        json_object_put(p);
}
