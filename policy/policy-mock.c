/* SPDX-License-Identifier: MIT */
#include "policy-mock.h"

#include <stdio.h>

typedef struct Mock {
        char *call;
        PolicyValue *args;   /* array or NULL */
        PolicyValue *result;
} Mock;

struct PolicyMock {
        Mock *mocks;
        size_t n;
};

PolicyMock *policy_mock_free(PolicyMock *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n; i++) {
                free(m->mocks[i].call);
                policy_value_unref(m->mocks[i].args);
                policy_value_unref(m->mocks[i].result);
        }
        free(m->mocks);
        free(m);
        return NULL;
}

int policy_mock_new(json_object *table, PolicyMock **ret) {
        _cleanup_(policy_mock_freep) PolicyMock *m = calloc(1, sizeof *m);
        int r;

        if (!m)
                return -ENOMEM;
        if (table && !json_object_is_type(table, json_type_array))
                return -EINVAL;
        size_t n = table ? json_object_array_length(table) : 0;
        m->mocks = calloc(MAX(n, (size_t) 1), sizeof *m->mocks);
        if (!m->mocks)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(table, i), *call, *args, *result;
                if (!json_object_is_type(e, json_type_object) || !json_object_object_get_ex(e, "call", &call) ||
                    !json_object_is_type(call, json_type_string))
                        return -EINVAL;
                Mock *mk = &m->mocks[m->n++];
                mk->call = strdup(json_object_get_string(call));
                if (!mk->call)
                        return -ENOMEM;
                if (json_object_object_get_ex(e, "args", &args)) {
                        if (!json_object_is_type(args, json_type_array))
                                return -EINVAL;
                        if ((r = policy_value_from_json(args, &mk->args)) < 0)
                                return r;
                }
                result = NULL;
                (void) json_object_object_get_ex(e, "result", &result);
                if ((r = policy_value_from_json(result, &mk->result)) < 0)
                        return r;
        }
        *ret = TAKE_PTR(m);
        return 0;
}

static bool is_wildcard(PolicyValue *v) {
        size_t len;
        return policy_value_type(v) == POLICY_TYPE_STRING && strcmp(policy_value_string(v, &len), "*") == 0;
}

int policy_mock_answer(PolicyMock *m, const PolicyCall *call, PolicyValue **ret) {
        size_t skip = strstr(call->name, "->") ? 1 : 0;
        for (size_t i = 0; i < m->n; i++) {
                Mock *mk = &m->mocks[i];
                if (strcmp(mk->call, call->name) != 0)
                        continue;
                bool ok = true;
                size_t want = policy_array_size(mk->args);
                if (want > call->n_args - skip)
                        ok = false;
                for (size_t k = 0; ok && k < want; k++) {
                        PolicyValue *w = policy_array_value_at(mk->args, k);
                        ok = is_wildcard(w) || policy_value_equal(w, call->args[k + skip]);
                }
                if (ok) {
                        *ret = policy_value_ref(mk->result);
                        return 0;
                }
        }
        return -ENOENT;
}

static int record_call(json_object *calls, const PolicyCall *call) {
        json_object *o = json_object_new_object(), *args = json_object_new_array();
        if (!o || !args) {
                json_object_put(o);
                json_object_put(args);
                return -ENOMEM;
        }
        json_object_object_add(o, "call", json_object_new_string(call->name));
        for (size_t i = 0; i < call->n_args; i++) {
                json_object *j = NULL;
                if (policy_value_to_json(call->args[i], &j) < 0) {
                        json_object_put(o);
                        json_object_put(args);
                        return -ENOMEM;
                }
                json_object_array_add(args, j);
        }
        json_object_object_add(o, "args", args);
        json_object_object_add(o, "timeout_ms", json_object_new_int((int) call->timeout_ms));
        json_object_array_add(calls, o);
        return 0;
}

int policy_mock_drive(PolicyMock *m, PolicyRun *r, json_object *calls) {
        for (;;) {
                int k = policy_run_step(r);
                if (k < 0)
                        return k;
                if (k == POLICY_RUN_DONE)
                        return 0;
                const PolicyCall *call = policy_run_pending(r);
                if (calls && record_call(calls, call) < 0)
                        return -ENOMEM;
                _cleanup_(policy_value_unrefp) PolicyValue *v = NULL;
                k = policy_mock_answer(m, call, &v);
                if (k == -ENOENT) {
                        char msg[200];
                        snprintf(msg, sizeof msg, "no mock for %s() at %s:%u:%u", call->name, call->file, call->line,
                                 call->col);
                        return policy_run_abort(r, msg);
                }
                if (k < 0)
                        return k;
                k = policy_run_resume(r, v);
                if (k < 0)
                        return k;
        }
}

static int member(json_object *fixture, const char *key, PolicyValue **ret) {
        json_object *j = NULL;
        if (fixture)
                (void) json_object_object_get_ex(fixture, key, &j);
        return policy_value_from_json(j, ret);
}

void policy_mock_params_done(PolicyRunParams *p) {
        p->connection = policy_value_unref(p->connection);
        p->transaction = policy_value_unref(p->transaction);
        p->arguments = policy_value_unref(p->arguments);
        p->context = policy_value_unref(p->context);
}

int policy_mock_params_from_json(json_object *fixture, PolicyPhase phase, PolicyRunParams *p) {
        int r;
        if ((r = member(fixture, "connection", &p->connection)) < 0 ||
            (r = member(fixture, "transaction", &p->transaction)) < 0 ||
            (r = member(fixture, "arguments", &p->arguments)) < 0 ||
            (r = member(fixture, "context", &p->context)) < 0) {
                policy_mock_params_done(p);
                return r;
        }
        PolicyValue *mail = policy_array_get_str(p->arguments, "mail");
        if (phase == POLICY_PHASE_EOD && mail && policy_value_type(mail) == POLICY_TYPE_ARRAY) {
                _cleanup_(policy_value_unrefp) PolicyValue *obj = policy_object_new("Mail", mail);
                if (!obj || (r = policy_array_unshare(&p->arguments)) < 0 ||
                    (r = policy_array_set_str(p->arguments, "mail", obj)) < 0) {
                        policy_mock_params_done(p);
                        return r < 0 ? r : -ENOMEM;
                }
        }
        return 0;
}

int policy_mock_read_file(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        const char *const *files = userdata;
        for (size_t i = 0; files && files[i]; i += 2)
                if (strcmp(files[i], path) == 0) {
                        size_t n = strlen(files[i + 1]);
                        if (n > max)
                                return -EFBIG;
                        char *t = strdup(files[i + 1]);
                        if (!t)
                                return -ENOMEM;
                        *ret_text = t;
                        *ret_len = n;
                        return 0;
                }
        return -ENOENT;
}
