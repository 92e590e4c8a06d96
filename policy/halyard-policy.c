/* SPDX-License-Identifier: MIT */
/* halyard-policy: the policy language's tools.
 *
 *   check FILE...   load and check; diagnostics on stderr as
 *                   file:line:col: error: ...; exit 1 on any error
 *   run FILE --phase P --fixture F.json
 *                   run one phase with the facts and mocked lookups of the
 *                   fixture; print the result (verdict, actions, calls,
 *                   $context) as JSON on stdout
 *   session FILE [--fixture F.json] [--ip A] [--helo H] [--local-domain D]...
 *                   [--permit-network CIDR]...
 *                   an SMTP dialogue on stdin through every phase's handler,
 *                   like exim -bh: prints the replies halyard-smtpd would
 *                   give, and "# phase: ..." lines for each lookup (answered
 *                   by the fixture's mocks), action and verdict
 *   test FILE.test|DIR...
 *                   golden diagnostics: a policy's source, "--- expect",
 *                   the exact diagnostics check prints for it; TAP output
 *   builtins        print the builtin manifest as JSON
 *
 * Exit status: 0 success, 1 policy or fixture errors, 2 usage. */

#include <arpa/inet.h>
#include <dirent.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>

#include "config.h"
#include "policy-builtins.h"
#include "policy-mock.h"
#include "policy.h"

static void help(void) {
        printf("Usage: halyard-policy COMMAND ...\n"
               "\n"
               "Commands:\n"
               "  check FILE...                        Check policies, print errors as file:line:col\n"
               "  run FILE --phase=P --fixture=JSON    Run one phase with mocked lookups, print the result\n"
               "  session FILE [--fixture=JSON]        Run an SMTP dialogue from stdin through the policy,\n"
               "                                       print the replies and a trace of each phase\n"
               "  test FILE.test|DIR...                Check policies against their expected diagnostics (TAP)\n"
               "  builtins                             Print the builtin manifest as JSON\n"
               "\n"
               "Options:\n"
               "  -h --help           Show this help\n"
               "     --version        Show the version\n"
               "  -p --phase=PHASE    connect, helo, auth, mailfrom, rcptto, eod or disconnect\n"
               "  -f --fixture=FILE   JSON: connection, transaction, arguments, context, mocks, step_budget\n"
               "  -q --quiet          check: no warnings\n"
               "     --ip=ADDRESS     session: the client's address (default: the fixture's, else 192.0.2.1)\n"
               "     --helo=HOST      session: begin as if the client had sent EHLO HOST\n"
               "     --hostname=NAME  session: the server's name in replies (default mx.example)\n"
               "     --local-domain=DOMAIN     session: a local domain for the built-in relay rules (repeatable)\n"
               "     --permit-network=CIDR     session: a network that may relay (repeatable)\n");
}

/* Loads a policy; diagnostics go to stderr (warnings unless quiet). */
static int load(const char *path, bool quiet, PolicyGeneration **ret) {
        PolicyDiags diags = {};
        char buf[1024];
        int r = policy_generation_load(path, NULL, &diags, ret);

        for (size_t i = 0; i < diags.n; i++) {
                if (quiet && diags.items[i].level != POLICY_DIAG_ERROR)
                        continue;
                policy_diag_format(&diags.items[i], buf, sizeof buf);
                fprintf(stderr, "%s\n", buf);
        }
        if (diags.n_errors + diags.n_warnings > diags.n)
                fprintf(stderr, "(%u more diagnostics not shown)\n", diags.n_errors + diags.n_warnings - (unsigned) diags.n);
        if (r == -ENOMEM)
                fprintf(stderr, "%s: out of memory\n", path);
        else if (r < 0)
                fprintf(stderr, "%s: %u error%s\n", path, diags.n_errors, diags.n_errors == 1 ? "" : "s");
        policy_diags_done(&diags);
        return r;
}

static int verb_check(int argc, char **argv, bool quiet) {
        int ret = 0;
        if (argc < 1) {
                fprintf(stderr, "check: no file given\n");
                return 2;
        }
        for (int i = 0; i < argc; i++) {
                _cleanup_(policy_generation_unrefp) PolicyGeneration *g = NULL;
                if (load(argv[i], quiet, &g) < 0)
                        ret = 1;
        }
        return ret;
}

static int verb_run(const char *path, const char *phase_name, const char *fixture_path) {
        _cleanup_(policy_generation_unrefp) PolicyGeneration *g = NULL;
        _cleanup_(policy_mock_freep) PolicyMock *mock = NULL;
        _cleanup_(policy_run_freep) PolicyRun *run = NULL;
        _cleanup_(policy_json_putp) json_object *fixture = NULL, *out = NULL, *calls = NULL;
        PolicyRunParams params = {};
        json_object *j;
        int r;

        PolicyPhase phase = policy_phase_from_string(phase_name);
        if (phase < 0) {
                fprintf(stderr, "run: unknown phase '%s'\n", phase_name ?: "");
                return 2;
        }
        if (load(path, true, &g) < 0)
                return 1;
        if (fixture_path) {
                fixture = json_object_from_file(fixture_path);
                if (!fixture || !json_object_is_type(fixture, json_type_object)) {
                        fprintf(stderr, "%s: not a JSON object\n", fixture_path);
                        return 1;
                }
        }
        j = NULL;
        if (fixture)
                (void) json_object_object_get_ex(fixture, "mocks", &j);
        r = policy_mock_new(j, &mock);
        if (r < 0) {
                fprintf(stderr, "%s: bad \"mocks\": each needs \"call\", optional \"args\" (array), \"result\"\n",
                        fixture_path);
                return 1;
        }
        r = policy_mock_params_from_json(fixture, phase, &params);
        if (r < 0) {
                fprintf(stderr, "%s: bad facts: %s\n", fixture_path, strerror(-r));
                return 1;
        }
        if (fixture && json_object_object_get_ex(fixture, "step_budget", &j))
                params.step_budget = (uint64_t) MAX(json_object_get_int64(j), (int64_t) 1);

        r = policy_run_new(g, phase, &params, &run);
        policy_mock_params_done(&params);
        if (r < 0) {
                fprintf(stderr, "run: %s\n", strerror(-r));
                return 1;
        }
        calls = json_object_new_array();
        if (!calls)
                return 1;
        r = policy_mock_drive(mock, run, calls);
        if (r < 0) {
                fprintf(stderr, "run: %s\n", strerror(-r));
                return 1;
        }
        r = policy_result_to_json(policy_run_result(run), &out);
        if (r < 0)
                return 1;
        json_object_object_add(out, "calls", json_object_get(calls));
        j = NULL;
        if (policy_value_to_json(policy_run_context(run), &j) < 0)
                return 1;
        json_object_object_add(out, "context", j);
        printf("%s\n", json_object_to_json_string_ext(out, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
        return 0;
}

/* ---- session: a fake SMTP dialogue, like exim -bh ----------------------- */

/* What halyard-smtpd would answer, phase by phase: the policy's verdicts
 * through the same reply rules (smtpd-session.c), and where a phase ends
 * without a verdict (no handler, or by default) smtpd's built-in rules:
 * recipients only for local domains, postmaster, authenticated clients and
 * permitted networks; AUTH only by the policy (there is no password file
 * here). Lookups are answered by the fixture's mocks. Nothing is queued. */

#define SESSION_ADDRESSES_MAX 64

typedef struct Session {
        PolicyGeneration *g;
        PolicyMock *mock;
        PolicyCache *cache;
        PolicyValue *fixture_connection; /* extra $connection facts (tls, remoteptr, ...) */
        PolicyValue *context;
        uint64_t step_budget;
        const char *hostname, *ip;
        unsigned port;
        char *const *local_domains;
        const ConfigAddress *permit;
        size_t n_permit;
        struct sockaddr_storage sa;
        char helo[256];
        bool ehlo;
        char auth_user[256], auth_mech[16];
        PolicyValue *sender; /* path facts, NULL: no MAIL yet */
        PolicyValue *rcpts;  /* address arrays (address, localpart, domain), as smtpd gives them */
        unsigned n_queued;
        bool closing;
        bool closed_locally;
        char last_reply[600];
} Session;

static void session_reply(Session *s, const char *fmt, ...) _printf_(2, 3);
static void session_reply(Session *s, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->last_reply, sizeof s->last_reply, fmt, ap);
        va_end(ap);
        printf("%s\n", s->last_reply);
}

static void session_trace(PolicyPhase phase, const char *fmt, ...) _printf_(2, 3);
static void session_trace(PolicyPhase phase, const char *fmt, ...) {
        va_list ap;
        printf("# %s: ", policy_phase_to_string(phase));
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
}

/* Compact JSON of a value (objects show as their JSON form); "?" on OOM. */
static char *value_text(const PolicyValue *v) {
        json_object *j = NULL;
        char *t = NULL;
        if (policy_value_to_json(v, &j) >= 0)
                t = strdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
        return t ?: strdup("?");
}

static int set_take(PolicyValue *a, const char *key, PolicyValue *v) {
        int r = v ? policy_array_set_str(a, key, v) : -ENOMEM;
        policy_value_unref(v);
        return r;
}

static int set_str(PolicyValue *a, const char *key, const char *v) {
        return v ? set_take(a, key, policy_string_new_cstr(v)) : 0;
}

static PolicyValue *connection_facts(Session *s) {
        _cleanup_(policy_value_unrefp) PolicyValue *c = policy_array_new();
        int r = c ? 0 : -ENOMEM;
        if (r >= 0)
                r = set_str(c, "id", "session");
        if (r >= 0)
                r = set_str(c, "remoteip", s->ip);
        if (r >= 0)
                r = set_take(c, "remoteport", policy_number_new(s->port));
        if (r >= 0)
                r = set_str(c, "localip", s->sa.ss_family == AF_INET6 ? "::1" : "127.0.0.1");
        if (r >= 0)
                r = set_take(c, "localport", policy_number_new(25));
        if (r >= 0)
                r = set_str(c, "serverid", s->hostname);
        if (r >= 0)
                r = set_str(c, "listener", "smtp");
        if (r >= 0 && s->helo[0]) {
                PolicyValue *h = policy_array_new();
                r = h ? set_str(h, "verb", s->ehlo ? "EHLO" : "HELO") : -ENOMEM;
                if (r >= 0)
                        r = set_str(h, "host", s->helo);
                r = r < 0 ? (policy_value_unref(h), r) : set_take(c, "helo", h);
        }
        if (r >= 0 && s->auth_user[0]) {
                PolicyValue *a = policy_array_new();
                r = a ? set_str(a, "mechanism", s->auth_mech) : -ENOMEM;
                if (r >= 0)
                        r = set_str(a, "username", s->auth_user);
                r = r < 0 ? (policy_value_unref(a), r) : set_take(c, "auth", a);
        }
        /* The fixture adds what a dialogue cannot say (tls, remoteptr). */
        for (size_t i = 0; r >= 0 && i < policy_array_size(s->fixture_connection); i++) {
                PolicyValue *k = policy_array_key_at(s->fixture_connection, i);
                if (!policy_array_get(c, k))
                        r = policy_array_set(c, k, policy_array_value_at(s->fixture_connection, i));
        }
        return r < 0 ? NULL : TAKE_PTR(c);
}

static PolicyValue *transaction_facts(Session *s) {
        _cleanup_(policy_value_unrefp) PolicyValue *t = policy_array_new();
        int r = t ? 0 : -ENOMEM;
        if (r >= 0 && s->sender)
                r = policy_array_set_str(t, "sender", s->sender);
        if (r >= 0)
                r = policy_array_set_str(t, "recipients", s->rcpts);
        return r < 0 ? NULL : TAKE_PTR(t);
}

/* Runs one phase to the end, tracing each call and the verdict. Returns the
 * run (done) or NULL on OOM; takes arguments. */
static PolicyRun *session_run(Session *s, PolicyPhase phase, PolicyValue *arguments) {
        _cleanup_(policy_value_unrefp) PolicyValue *args = arguments, *conn = connection_facts(s),
                                                   *tx = transaction_facts(s);
        PolicyRunParams p = { .connection = conn, .transaction = tx, .arguments = args, .context = s->context,
                              .cache = s->cache, .step_budget = s->step_budget };
        PolicyRun *run = NULL;

        if (!args || !conn || !tx || policy_run_new(s->g, phase, &p, &run) < 0)
                return NULL;
        for (;;) {
                int k = policy_run_step(run);
                if (k < 0 || k == POLICY_RUN_DONE)
                        break;
                const PolicyCall *call = policy_run_pending(run);
                _cleanup_(policy_value_unrefp) PolicyValue *v = NULL;
                char line[2048];
                size_t o = (size_t) snprintf(line, sizeof line, "%s(", call->name);
                for (size_t i = strstr(call->name, "->") ? 1 : 0; i < call->n_args; i++) {
                        _cleanup_free_ char *a = value_text(call->args[i]);
                        o += (size_t) snprintf(line + MIN(o, sizeof line), sizeof line - MIN(o, sizeof line), "%s%s",
                                               i > (strstr(call->name, "->") ? 1u : 0u) ? ", " : "", a);
                }
                if (o < sizeof line)
                        snprintf(line + o, sizeof line - o, ")");
                k = policy_mock_answer(s->mock, call, &v);
                if (k == -ENOENT) {
                        char msg[300];
                        session_trace(phase, "%s at %s:%u:%u: no mock", line, call->file, call->line, call->col);
                        snprintf(msg, sizeof msg, "no mock for %s() at %s:%u:%u", call->name, call->file, call->line,
                                 call->col);
                        (void) policy_run_abort(run, msg);
                        break;
                }
                _cleanup_free_ char *answer = value_text(v);
                session_trace(phase, "%s = %s", line, answer);
                if (k < 0 || policy_run_resume(run, v) < 0)
                        break;
        }

        const PolicyResult *res = policy_run_result(run);
        for (size_t i = 0; res->actions && i < policy_array_size(res->actions); i++) {
                _cleanup_free_ char *a = value_text(policy_array_value_at(res->actions, i));
                session_trace(phase, "action %s", a);
        }
        if (res->failed)
                session_trace(phase, "failed: %s", res->error ?: "unknown error");
        if (res->no_handler)
                session_trace(phase, "no handler");
        else if (res->verdict != POLICY_VERDICT_NONE) {
                char code[40] = "";
                if (res->code)
                        snprintf(code, sizeof code, " %u %s", res->code, res->enhanced);
                session_trace(phase, "%s%s%s%s%s%s%s%s", policy_verdict_to_string(res->verdict), code,
                              res->reason ? " \"" : "", res->reason ?: "", res->reason ? "\"" : "",
                              res->at ? " at " : "", res->at ?: "", res->disconnect ? ", disconnect" : "");
        } else
                session_trace(phase, "no verdict");
        policy_value_unref(s->context);
        s->context = policy_value_ref(policy_run_context(run));
        return run;
}

/* smtpd's policy_refused(): the reply for Reject()/Defer(), and true. */
static bool session_refused(Session *s, const PolicyResult *r) {
        PolicyReply pr;
        if (!policy_result_reply(r, false, &pr))
                return false;
        session_reply(s, "%u %s %s", pr.code, pr.enhanced, pr.text);
        if (r->disconnect) {
                s->closing = true;
                s->closed_locally = true;
        }
        return true;
}

/* Runs phase when the policy has a handler; NULL result means "no handler"
 * (traced) or out of memory (*oom). */
static PolicyRun *session_phase(Session *s, PolicyPhase phase, PolicyValue *args, bool *oom) {
        *oom = false;
        if (!policy_generation_has_handler(s->g, phase)) {
                policy_value_unref(args);
                session_trace(phase, "no handler");
                return NULL;
        }
        PolicyRun *run = session_run(s, phase, args);
        if (!run)
                *oom = true;
        return run;
}

static void session_oom(Session *s) {
        session_reply(s, "451 4.3.0 Local error, try again later");
}

/* "<local@domain> PARAMS" after "FROM:" or "TO:": the path facts as smtpd
 * builds them (address, localpart, domain; "" for the null path), or NULL
 * when the path is malformed. */
static PolicyValue *parse_path(const char *arg, bool *postmaster) {
        while (*arg == ' ')
                arg++;
        if (*arg != '<')
                return NULL;
        const char *end = strchr(arg, '>');
        if (!end)
                return NULL;
        _cleanup_free_ char *addr = strndup(arg + 1, (size_t) (end - arg - 1));
        if (!addr)
                return NULL;
        PolicyValue *a = policy_array_new();
        if (!a)
                return NULL;
        *postmaster = strcasecmp(addr, "postmaster") == 0;
        const char *at = strrchr(addr, '@');
        int r = set_str(a, "address", *postmaster ? "postmaster" : addr);
        if (r >= 0 && *postmaster)
                r = set_str(a, "localpart", "postmaster");
        else if (r >= 0 && at) {
                _cleanup_free_ char *local = strndup(addr, (size_t) (at - addr));
                r = local ? set_str(a, "localpart", local) : -ENOMEM;
                if (r >= 0)
                        r = set_str(a, "domain", at + 1);
        } else if (r >= 0 && addr[0]) {
                policy_value_unref(a);
                return NULL; /* no domain: smtpd's parser refuses it */
        }
        return r < 0 ? policy_value_unref(a) : a;
}

static bool domain_in(char *const *list, const char *domain) {
        for (char *const *d = list; d && *d; d++)
                if (domain && strcasecmp(*d, domain) == 0)
                        return true;
        return false;
}

static bool session_permitted(Session *s) {
        for (size_t i = 0; i < s->n_permit; i++)
                if (config_address_match(&s->permit[i], (const struct sockaddr *) &s->sa))
                        return true;
        return false;
}

static void transaction_reset(Session *s) {
        s->sender = policy_value_unref(s->sender);
        policy_value_unref(s->rcpts);
        s->rcpts = policy_array_new();
}

static void session_ehlo_reply(Session *s) {
        if (!s->ehlo) {
                session_reply(s, "250 %s", s->hostname);
                return;
        }
        session_reply(s, "250-%s Hello %s [%s]", s->hostname, s->helo, s->ip);
        session_reply(s, "250-PIPELINING");
        session_reply(s, "250-SIZE %llu", 50ULL * 1024 * 1024);
        session_reply(s, "250-8BITMIME");
        session_reply(s, "250-SMTPUTF8");
        session_reply(s, "250-ENHANCEDSTATUSCODES");
        if (!s->auth_user[0] && policy_generation_has_handler(s->g, POLICY_PHASE_AUTH))
                session_reply(s, "250-AUTH PLAIN");
        session_reply(s, "250-DSN");
        session_reply(s, "250 CHUNKING");
}

static void cmd_helo(Session *s, const char *arg, bool ehlo) {
        bool oom;
        transaction_reset(s);
        snprintf(s->helo, sizeof s->helo, "%s", arg);
        s->ehlo = ehlo;
        PolicyValue *args = policy_array_new();
        if (args && (set_str(args, "verb", ehlo ? "EHLO" : "HELO") < 0 || set_str(args, "host", s->helo) < 0))
                args = policy_value_unref(args);
        _cleanup_(policy_run_freep) PolicyRun *run = session_phase(s, POLICY_PHASE_HELO, args, &oom);
        if (oom)
                return session_oom(s);
        if (run && session_refused(s, policy_run_result(run))) {
                s->helo[0] = 0; /* a refused HELO is forgotten */
                s->ehlo = false;
                return;
        }
        session_ehlo_reply(s);
}

static void cmd_mail(Session *s, const char *arg) {
        bool oom, pm;
        if (!s->helo[0])
                return session_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        if (s->sender)
                return session_reply(s, "503 5.5.1 Error: nested MAIL command");
        _cleanup_(policy_value_unrefp) PolicyValue *path = parse_path(arg, &pm);
        if (!path)
                return session_reply(s, "501 5.1.7 Error: bad sender address syntax");
        PolicyValue *args = policy_array_new();
        if (args && policy_array_set_str(args, "address", path) < 0)
                args = policy_value_unref(args);
        _cleanup_(policy_run_freep) PolicyRun *run = session_phase(s, POLICY_PHASE_MAILFROM, args, &oom);
        if (oom)
                return session_oom(s);
        if (run && session_refused(s, policy_run_result(run)))
                return;
        s->sender = TAKE_PTR(path);
        session_reply(s, "250 2.1.0 Ok");
}

static void cmd_rcpt(Session *s, const char *arg) {
        bool oom, pm;
        if (!s->sender)
                return session_reply(s, "503 5.5.1 Error: need MAIL command");
        _cleanup_(policy_value_unrefp) PolicyValue *path = parse_path(arg, &pm);
        if (!path || policy_value_string(policy_array_get_str(path, "address"), NULL)[0] == 0)
                return session_reply(s, "501 5.1.3 Error: bad recipient address syntax");
        PolicyValue *args = policy_array_new();
        if (args && policy_array_set_str(args, "address", path) < 0)
                args = policy_value_unref(args);
        _cleanup_(policy_run_freep) PolicyRun *run = session_phase(s, POLICY_PHASE_RCPTTO, args, &oom);
        if (oom)
                return session_oom(s);
        if (run && session_refused(s, policy_run_result(run)))
                return;
        if (!run || policy_result_verdict(policy_run_result(run)) != POLICY_VERDICT_ACCEPT) {
                PolicyValue *d = policy_array_get_str(path, "domain");
                const char *domain = d ? policy_value_string(d, NULL) : NULL;
                const char *why = pm                                  ? "postmaster"
                                  : s->auth_user[0]                   ? "authenticated"
                                  : session_permitted(s)              ? "permitted network"
                                  : domain_in(s->local_domains, domain) ? "local domain"
                                                                      : NULL;
                session_trace(POLICY_PHASE_RCPTTO, "built-in rules: %s", why ?: "relay denied");
                if (!why)
                        return session_reply(s, "554 5.7.1 Relay access denied");
        }
        /* the finished run may still share the list */
        if (policy_array_unshare(&s->rcpts) < 0 || policy_array_push(s->rcpts, path) < 0)
                return session_oom(s);
        session_reply(s, "250 2.1.5 Ok");
}

/* The header block of the message, unfolded as smtpd's Mail object has it
 * (value without leading blanks, continuation lines joined). */
static int push_field(PolicyValue *list, const char *name, size_t name_len, const char *value) {
        while (*value == ' ' || *value == '\t')
                value++;
        PolicyValue *pair = policy_array_new(), *n = policy_string_new(name, name_len), *v = policy_string_new_cstr(value);
        int r = pair && n && v ? policy_array_push(pair, n) : -ENOMEM;
        if (r >= 0)
                r = policy_array_push(pair, v);
        if (r >= 0)
                r = policy_array_push(list, pair);
        policy_value_unref(pair);
        policy_value_unref(n);
        policy_value_unref(v);
        return r;
}

static PolicyValue *mail_object(char **lines, size_t n) {
        _cleanup_(policy_value_unrefp) PolicyValue *list = policy_array_new(), *payload = policy_array_new();
        int r = list && payload ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n && lines[i][0]; i++) {
                const char *colon = strchr(lines[i], ':');
                if (!colon || lines[i][0] == ' ' || lines[i][0] == '\t')
                        break; /* not a header field: the body starts */
                _cleanup_free_ char *value = strdup(colon + 1);
                if (!value)
                        return NULL;
                size_t first = i;
                while (i + 1 < n && (lines[i + 1][0] == ' ' || lines[i + 1][0] == '\t')) {
                        char *v = NULL;
                        if (asprintf(&v, "%s%s", value, lines[++i]) < 0)
                                return NULL;
                        free(value);
                        value = v;
                }
                r = push_field(list, lines[first], (size_t) (colon - lines[first]), value);
        }
        if (r >= 0)
                r = policy_array_set_str(payload, "headers", list);
        return r < 0 ? NULL : policy_object_new("Mail", payload);
}

/* Reads one line from stdin without its line end; NULL at EOF. */
static char *read_line(FILE *f) {
        char *line = NULL;
        size_t n = 0;
        ssize_t k = getline(&line, &n, f);
        if (k < 0) {
                free(line);
                return NULL;
        }
        while (k > 0 && (line[k - 1] == '\n' || line[k - 1] == '\r'))
                line[--k] = 0;
        return line;
}

static void free_lines(char **lines, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(lines[i]);
        free(lines);
}

static void cmd_data(Session *s, FILE *in) {
        bool oom;
        if (!s->sender)
                return session_reply(s, "503 5.5.1 Error: need MAIL command");
        if (policy_array_size(s->rcpts) == 0)
                return session_reply(s, "503 5.5.1 Error: need RCPT command");
        session_reply(s, "354 End data with <CR><LF>.<CR><LF>");

        char **lines = NULL;
        size_t n = 0;
        bool ended = false;
        for (char *l; (l = read_line(in));) {
                if (strcmp(l, ".") == 0) {
                        free(l);
                        ended = true;
                        break;
                }
                if (l[0] == '.')
                        memmove(l, l + 1, strlen(l)); /* dot-stuffing */
                char **nl = realloc(lines, (n + 1) * sizeof *lines);
                if (!nl) {
                        free(l);
                        break;
                }
                lines = nl;
                lines[n++] = l;
        }
        if (!ended) {
                free_lines(lines, n);
                s->closing = true; /* EOF inside DATA: the client went away */
                return;
        }
        PolicyValue *mail = mail_object(lines, n);
        free_lines(lines, n);
        PolicyValue *args = mail ? policy_array_new() : NULL;
        if (args && policy_array_set_str(args, "mail", mail) < 0)
                args = policy_value_unref(args);
        policy_value_unref(mail);
        _cleanup_(policy_run_freep) PolicyRun *run = session_phase(s, POLICY_PHASE_EOD, args, &oom);
        if (oom) {
                session_oom(s);
                return transaction_reset(s);
        }
        if (!run || !session_refused(s, policy_run_result(run)))
                session_reply(s, "250 2.0.0 Ok: queued as session-%u", ++s->n_queued);
        transaction_reset(s);
}

/* Strict base64 (RFC 4648, padding required); -EINVAL or -ENOMEM. */
static int base64_decode(const char *s, uint8_t **ret, size_t *ret_len) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t n = strlen(s), o = 0;
        if (n % 4 != 0)
                return -EINVAL;
        uint8_t *out = malloc(n / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i += 4) {
                uint32_t v = 0;
                unsigned pad = 0;
                for (size_t k = 0; k < 4; k++) {
                        const char *p = s[i + k] ? strchr(alphabet, s[i + k]) : NULL;
                        if (s[i + k] == '=' && i + 4 == n && k >= 2 && (k == 3 || s[i + 3] == '=')) {
                                pad++;
                                v <<= 6;
                                continue;
                        }
                        if (!p || pad) {
                                free(out);
                                return -EINVAL;
                        }
                        v = v << 6 | (uint32_t) (p - alphabet);
                }
                out[o++] = (uint8_t) (v >> 16);
                if (pad < 2)
                        out[o++] = (uint8_t) (v >> 8);
                if (pad < 1)
                        out[o++] = (uint8_t) v;
        }
        *ret = out;
        *ret_len = o;
        return 0;
}

static void cmd_auth(Session *s, const char *arg, FILE *in) {
        bool oom;
        if (!s->helo[0] || !s->ehlo)
                return session_reply(s, "503 5.5.1 Error: send EHLO first");
        if (s->auth_user[0])
                return session_reply(s, "503 5.5.1 Error: already authenticated");
        if (s->sender)
                return session_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
        if (strncasecmp(arg, "PLAIN", 5) != 0 || (arg[5] != 0 && arg[5] != ' '))
                return session_reply(s, "504 5.5.4 Error: unrecognized authentication type");
        const char *initial = arg + 5;
        while (*initial == ' ')
                initial++;
        _cleanup_free_ char *line = NULL;
        if (!*initial) {
                session_reply(s, "334 ");
                line = read_line(in);
                if (!line) {
                        s->closing = true;
                        return;
                }
                if (strcmp(line, "*") == 0)
                        return session_reply(s, "501 5.7.0 Error: authentication cancelled");
                initial = line;
        }
        _cleanup_free_ uint8_t *raw = NULL;
        size_t len = 0;
        if (base64_decode(initial, &raw, &len) < 0)
                return session_reply(s, "501 5.5.2 Error: cannot decode response");
        /* authzid NUL authcid NUL password */
        const char *authzid = (const char *) raw, *user, *pass;
        const uint8_t *z1 = memchr(raw, 0, len), *z2 = z1 ? memchr(z1 + 1, 0, len - (size_t) (z1 + 1 - raw)) : NULL;
        if (!z1 || !z2 || memchr(z2 + 1, 0, len - (size_t) (z2 + 1 - raw)))
                return session_reply(s, "501 5.5.2 Error: malformed PLAIN response");
        (void) authzid;
        user = (const char *) z1 + 1;
        _cleanup_free_ char *password = strndup((const char *) z2 + 1, len - (size_t) (z2 + 1 - raw));
        pass = password;
        if (!pass || !*user || strlen(user) >= sizeof s->auth_user)
                return session_reply(s, "535 5.7.8 Error: authentication failed");

        PolicyValue *args = policy_array_new();
        if (args && (set_str(args, "mechanism", "PLAIN") < 0 || set_str(args, "username", user) < 0 ||
                     set_str(args, "password", pass) < 0))
                args = policy_value_unref(args);
        _cleanup_(policy_run_freep) PolicyRun *run = session_phase(s, POLICY_PHASE_AUTH, args, &oom);
        if (oom)
                return session_reply(s, "454 4.7.0 Temporary authentication failure");
        const PolicyResult *r = run ? policy_run_result(run) : NULL;
        switch (r ? policy_result_verdict(r) : POLICY_VERDICT_NONE) {
        case POLICY_VERDICT_ACCEPT:
                snprintf(s->auth_user, sizeof s->auth_user, "%s", r->username && *r->username ? r->username : user);
                snprintf(s->auth_mech, sizeof s->auth_mech, "PLAIN");
                return session_reply(s, "235 2.7.0 Authentication successful");
        case POLICY_VERDICT_DEFER:
                return session_reply(s, "454 4.7.0 Temporary authentication failure");
        case POLICY_VERDICT_REJECT:
                return session_reply(s, "535 5.7.8 Error: authentication failed");
        default:
                /* smtpd would check its password file; there is none here. */
                session_trace(POLICY_PHASE_AUTH, "built-in rules: no password file in a session, failed");
                return session_reply(s, "535 5.7.8 Error: authentication failed");
        }
}

static bool verb_is(const char *line, const char *verb, const char **ret_arg) {
        size_t n = strlen(verb);
        if (strncasecmp(line, verb, n) != 0 || (line[n] != 0 && line[n] != ' ' && line[n] != ':'))
                return false;
        const char *a = line + n;
        while (*a == ' ')
                a++;
        *ret_arg = a;
        return true;
}

static void session_command(Session *s, const char *line, FILE *in) {
        const char *arg;
        if (verb_is(line, "EHLO", &arg) || verb_is(line, "HELO", &arg)) {
                if (!*arg)
                        return session_reply(s, "501 5.5.4 Syntax: %.4s hostname", line);
                return cmd_helo(s, arg, strncasecmp(line, "EHLO", 4) == 0);
        }
        if (verb_is(line, "MAIL", &arg)) {
                if (strncasecmp(arg, "FROM:", 5) != 0)
                        return session_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
                return cmd_mail(s, arg + 5);
        }
        if (verb_is(line, "RCPT", &arg)) {
                if (strncasecmp(arg, "TO:", 3) != 0)
                        return session_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
                return cmd_rcpt(s, arg + 3);
        }
        if (verb_is(line, "DATA", &arg))
                return cmd_data(s, in);
        if (verb_is(line, "AUTH", &arg))
                return cmd_auth(s, arg, in);
        if (verb_is(line, "RSET", &arg)) {
                transaction_reset(s);
                return session_reply(s, "250 2.0.0 Ok");
        }
        if (verb_is(line, "NOOP", &arg))
                return session_reply(s, "250 2.0.0 Ok");
        if (verb_is(line, "QUIT", &arg)) {
                session_reply(s, "221 2.0.0 Bye");
                s->closing = true;
                s->closed_locally = true;
                return;
        }
        session_reply(s, "502 5.5.2 Error: command not recognized");
}

typedef struct SessionOptions {
        const char *ip, *helo, *hostname, *fixture;
        char **local_domains;
        size_t n_local_domains;
        ConfigAddress *permit;
        size_t n_permit;
} SessionOptions;

static int verb_session(const char *path, const SessionOptions *o) {
        _cleanup_(policy_generation_unrefp) PolicyGeneration *g = NULL;
        _cleanup_(policy_mock_freep) PolicyMock *mock = NULL;
        _cleanup_(policy_cache_freep) PolicyCache *cache = NULL;
        _cleanup_(policy_json_putp) json_object *fixture = NULL;
        json_object *j = NULL;
        int r;

        if (load(path, true, &g) < 0)
                return 1;
        if (o->fixture) {
                fixture = json_object_from_file(o->fixture);
                if (!fixture || !json_object_is_type(fixture, json_type_object)) {
                        fprintf(stderr, "%s: not a JSON object\n", o->fixture);
                        return 1;
                }
                (void) json_object_object_get_ex(fixture, "mocks", &j);
        }
        if (policy_mock_new(j, &mock) < 0) {
                fprintf(stderr, "%s: bad \"mocks\": each needs \"call\", optional \"args\" (array), \"result\"\n",
                        o->fixture);
                return 1;
        }
        if (policy_cache_new(&cache) < 0)
                return 1;

        Session s = { .g = g, .mock = mock, .cache = cache, .hostname = o->hostname ?: "mx.example",
                      .port = 40000, .local_domains = o->local_domains, .permit = o->permit, .n_permit = o->n_permit };
        j = NULL;
        if (fixture && json_object_object_get_ex(fixture, "connection", &j) && policy_value_from_json(j, &s.fixture_connection) < 0)
                return 1;
        j = NULL;
        if (fixture && json_object_object_get_ex(fixture, "context", &j) && policy_value_from_json(j, &s.context) < 0)
                return 1;
        if (fixture && json_object_object_get_ex(fixture, "step_budget", &j))
                s.step_budget = (uint64_t) MAX(json_object_get_int64(j), (int64_t) 1);
        PolicyValue *fip = policy_array_get_str(s.fixture_connection, "remoteip");
        s.ip = o->ip ?: fip && policy_value_type(fip) == POLICY_TYPE_STRING ? policy_value_string(fip, NULL) : "192.0.2.1";
        struct sockaddr_in *sin = (struct sockaddr_in *) &s.sa;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &s.sa;
        if (inet_pton(AF_INET, s.ip, &sin->sin_addr) == 1)
                sin->sin_family = AF_INET;
        else if (inet_pton(AF_INET6, s.ip, &sin6->sin6_addr) == 1)
                sin6->sin6_family = AF_INET6;
        else {
                fprintf(stderr, "session: '%s' is not an IP address\n", s.ip);
                policy_value_unref(s.fixture_connection);
                policy_value_unref(s.context);
                return 2;
        }
        s.rcpts = policy_array_new();
        if (!s.rcpts)
                return 1;

        /* connect: a refusal closes (554 or 421, with the host name, as smtpd) */
        bool oom;
        PolicyValue *args = policy_array_new();
        if (args && (set_str(args, "remoteip", s.ip) < 0 || set_take(args, "remoteport", policy_number_new(s.port)) < 0))
                args = policy_value_unref(args);
        PolicyRun *run = session_phase(&s, POLICY_PHASE_CONNECT, args, &oom);
        const PolicyResult *res = run ? policy_run_result(run) : NULL;
        PolicyReply pr;
        if (oom)
                r = -ENOMEM;
        else if (res && policy_result_reply(res, true, &pr)) {
                session_reply(&s, "%u %s %s %s", pr.code, pr.enhanced, s.hostname, pr.text);
                s.closing = s.closed_locally = true;
                r = 0;
        } else {
                session_reply(&s, "220 %s ESMTP halyard", s.hostname);
                r = 0;
        }
        policy_run_free(run);

        if (r >= 0 && !s.closing && o->helo)
                cmd_helo(&s, o->helo, true);
        while (r >= 0 && !s.closing) {
                _cleanup_free_ char *line = read_line(stdin);
                if (!line)
                        break;
                session_command(&s, line, stdin);
        }

        /* disconnect: no verdicts, but its log() and lookups show */
        args = policy_array_new();
        if (args && (set_str(args, "close", s.closed_locally ? "local" : "remote") < 0 ||
                     set_str(args, "reply", s.last_reply) < 0))
                args = policy_value_unref(args);
        run = session_phase(&s, POLICY_PHASE_DISCONNECT, args, &oom);
        policy_run_free(run);

        policy_value_unref(s.fixture_connection);
        policy_value_unref(s.context);
        policy_value_unref(s.sender);
        policy_value_unref(s.rcpts);
        fflush(stdout);
        return r < 0 || oom ? 1 : 0;
}

/* ---- test: golden diagnostics -------------------------------------------- */

/* A NAME.test file is a policy's source, then a line "--- expect", then the
 * exact diagnostics `check` prints for it (file:line:col: error|warning: ...,
 * with the .test file as the file name, so locations point into it), or
 * nothing when it must load cleanly. Runs (facts, mocks, verdict, actions)
 * are JSON fixtures instead (tests/golden/NAME.json): structured in, structured
 * out, compared member by member. */

typedef struct TestSource {
        const char *path;
        const char *text;
        size_t len;
} TestSource;

static int test_read_file(void *userdata, const char *path, size_t max, char **ret_text, size_t *ret_len) {
        const TestSource *t = userdata;
        if (strcmp(path, t->path) == 0) {
                if (t->len > max)
                        return -EFBIG;
                *ret_text = strndup(t->text, t->len);
                *ret_len = t->len;
                return *ret_text ? 0 : -ENOMEM;
        }
        /* imports: from the file system, as policy_generation_load() reads them */
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        char *buf = malloc(max + 2);
        if (!buf) {
                fclose(f);
                return -ENOMEM;
        }
        size_t n = fread(buf, 1, max + 1, f);
        fclose(f);
        if (n > max) {
                free(buf);
                return -EFBIG;
        }
        buf[n] = 0;
        *ret_text = buf;
        *ret_len = n;
        return 0;
}

static char *read_text(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t n = 0;
        if (!f)
                return NULL;
        if (getdelim(&buf, &n, '\0', f) < 0) {
                free(buf);
                buf = NULL;
        }
        fclose(f);
        return buf;
}

/* Returns 0 when the diagnostics match, 1 when not (the difference on
 * stdout as TAP comments), negative errno on errors. */
static int test_one(const char *path, unsigned num) {
        _cleanup_free_ char *text = read_text(path);
        if (!text) {
                printf("not ok %u - %s: %s\n", num, path, strerror(errno ?: EIO));
                return 1;
        }
        char *sep = strstr(text, "\n--- expect\n");
        if (!sep && strncmp(text, "--- expect\n", 11) == 0)
                sep = text - 1;
        if (!sep) {
                printf("not ok %u - %s: no \"--- expect\" line\n", num, path);
                return 1;
        }
        const char *want = sep + strlen("\n--- expect\n");
        TestSource src = { .path = path, .text = text, .len = (size_t) (sep + 1 - text) };
        PolicyLoadOptions opts = { .read_file = test_read_file, .userdata = &src };
        PolicyDiags diags = {};
        PolicyGeneration *g = NULL;
        (void) policy_generation_load(path, &opts, &diags, &g);
        policy_generation_unref(g);

        _cleanup_free_ char *got = NULL;
        size_t got_size = 0;
        FILE *m = open_memstream(&got, &got_size);
        if (!m) {
                policy_diags_done(&diags);
                return -ENOMEM;
        }
        for (size_t i = 0; i < diags.n; i++) {
                char buf[1024];
                policy_diag_format(&diags.items[i], buf, sizeof buf);
                fprintf(m, "%s\n", buf);
        }
        policy_diags_done(&diags);
        if (fclose(m) != 0)
                return -ENOMEM;
        if (strcmp(got, want) == 0) {
                printf("ok %u - %s\n", num, path);
                return 0;
        }
        printf("not ok %u - %s\n# expected:\n", num, path);
        for (const char *p = want; *p;) {
                size_t l = strcspn(p, "\n");
                printf("#   %.*s\n", (int) l, p);
                p += l + (p[l] == '\n');
        }
        printf("# got:\n");
        for (const char *p = got; *p;) {
                size_t l = strcspn(p, "\n");
                printf("#   %.*s\n", (int) l, p);
                p += l + (p[l] == '\n');
        }
        return 1;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Arguments are .test files or directories of them; TAP on stdout. */
static int verb_test(int argc, char **argv) {
        char **files = NULL;
        size_t n = 0;
        int ret = 0;

        for (int i = 0; i < argc; i++) {
                DIR *d = opendir(argv[i]);
                if (!d) {
                        char **nf = realloc(files, (n + 1) * sizeof *files);
                        if (!nf || !(nf[n] = strdup(argv[i])))
                                return 1;
                        files = nf;
                        n++;
                        continue;
                }
                size_t first = n;
                for (struct dirent *de; (de = readdir(d));) {
                        size_t len = strlen(de->d_name);
                        if (len < 6 || strcmp(de->d_name + len - 5, ".test") != 0)
                                continue;
                        char **nf = realloc(files, (n + 1) * sizeof *files);
                        if (!nf || asprintf(&nf[n], "%s/%s", argv[i], de->d_name) < 0) {
                                closedir(d);
                                return 1;
                        }
                        files = nf;
                        n++;
                }
                closedir(d);
                qsort(files + first, n - first, sizeof *files, cmp_str);
        }
        if (n == 0) {
                fprintf(stderr, "test: no .test files\n");
                free(files);
                return 2;
        }
        printf("1..%zu\n", n);
        for (size_t i = 0; i < n; i++) {
                int r = test_one(files[i], (unsigned) i + 1);
                if (r != 0)
                        ret = 1;
                free(files[i]);
        }
        free(files);
        return ret;
}

int main(int argc, char **argv) {
        enum { ARG_VERSION = 0x100, ARG_IP, ARG_HELO, ARG_HOSTNAME, ARG_LOCAL_DOMAIN, ARG_PERMIT_NETWORK };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "phase", required_argument, NULL, 'p' },
                { "fixture", required_argument, NULL, 'f' },
                { "quiet", no_argument, NULL, 'q' },
                { "ip", required_argument, NULL, ARG_IP },
                { "helo", required_argument, NULL, ARG_HELO },
                { "hostname", required_argument, NULL, ARG_HOSTNAME },
                { "local-domain", required_argument, NULL, ARG_LOCAL_DOMAIN },
                { "permit-network", required_argument, NULL, ARG_PERMIT_NETWORK },
                {}
        };
        const char *phase = NULL, *fixture = NULL;
        bool quiet = false;
        int c;
        /* Both lists are bounded by argc: no allocation needed. */
        char *domains[SESSION_ADDRESSES_MAX + 1] = {};
        ConfigAddress permit[SESSION_ADDRESSES_MAX];
        SessionOptions so = { .local_domains = domains, .permit = permit };

        while ((c = getopt_long(argc, argv, "hp:f:q", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("halyard-policy %s\n", HALYARD_VERSION);
                        return 0;
                case 'p':
                        phase = optarg;
                        break;
                case 'f':
                        fixture = optarg;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case ARG_IP:
                        so.ip = optarg;
                        break;
                case ARG_HELO:
                        so.helo = optarg;
                        break;
                case ARG_HOSTNAME:
                        so.hostname = optarg;
                        break;
                case ARG_LOCAL_DOMAIN:
                        if (so.n_local_domains >= SESSION_ADDRESSES_MAX) {
                                fprintf(stderr, "too many --local-domain\n");
                                return 2;
                        }
                        domains[so.n_local_domains++] = optarg;
                        break;
                case ARG_PERMIT_NETWORK:
                        if (so.n_permit >= SESSION_ADDRESSES_MAX) {
                                fprintf(stderr, "too many --permit-network\n");
                                return 2;
                        }
                        if (config_parse_address(optarg, &permit[so.n_permit]) < 0) {
                                fprintf(stderr, "--permit-network: '%s' is not an address or network\n", optarg);
                                return 2;
                        }
                        so.n_permit++;
                        break;
                default:
                        return 2;
                }
        if (optind >= argc) {
                help();
                return 2;
        }
        const char *verb = argv[optind++];
        if (strcmp(verb, "check") == 0)
                return verb_check(argc - optind, argv + optind, quiet);
        if (strcmp(verb, "run") == 0) {
                if (argc - optind != 1) {
                        fprintf(stderr, "run: exactly one policy file\n");
                        return 2;
                }
                return verb_run(argv[optind], phase, fixture);
        }
        if (strcmp(verb, "test") == 0)
                return verb_test(argc - optind, argv + optind);
        if (strcmp(verb, "session") == 0) {
                if (argc - optind != 1) {
                        fprintf(stderr, "session: exactly one policy file\n");
                        return 2;
                }
                so.fixture = fixture;
                return verb_session(argv[optind], &so);
        }
        if (strcmp(verb, "builtins") == 0) {
                _cleanup_(policy_json_putp) json_object *j = NULL;
                if (policy_builtins_to_json(&j) < 0)
                        return 1;
                printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
                return 0;
        }
        fprintf(stderr, "Unknown command '%s'\n", verb);
        return 2;
}
