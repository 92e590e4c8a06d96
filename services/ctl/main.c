/* SPDX-License-Identifier: MIT */
/* halyardctl: the operator's varlink client. Generic verbs behave like
 * systemd's varlinkctl (info, list-interfaces, introspect, call with --more
 * and --oneway); `status` asks every halyard service for GetStatus. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "macro.h"

static void help(void) {
        printf("Usage: halyardctl [OPTIONS] COMMAND ...\n"
               "\n"
               "Commands:\n"
               "  status                          Ask every halyard service for its status\n"
               "  info ADDRESS                    Show service information\n"
               "  list-interfaces ADDRESS         List the interfaces a service implements\n"
               "  introspect ADDRESS [INTERFACE…] Show interface definitions\n"
               "  call ADDRESS METHOD [JSON]      Call a method (parameters from stdin if JSON is omitted)\n"
               "  queue list [--state=S] [--domain=D] [--sender=A]\n"
               "                                  List queued messages\n"
               "  queue show|hold|release|delete|bounce QUEUE-ID\n"
               "  queue retry QUEUE-ID | --domain=D  Deliver now\n"
               "  queue monitor                   Follow delivery events\n"
               "  tlsrpt status|reports           TLS reporting: today's results, reports sent\n"
               "  tlsrpt preview DOMAIN [DAY]     The TLS report that would be sent now\n"
               "  tlsrpt send [DAY]               Send the reports of complete days (or DAY)\n"
               "  policy cache list               The smtpd policy's cache buckets\n"
               "  policy cache clear [NAMESPACE]  Drop cached results\n"
               "  policy trace [ADDRESS [on|off]] Log the policy's steps for a client\n"
               "  arc validate FILE               The ARC chain of a message (FILE - is stdin)\n"
               "  arc authenticate FILE [--ip=IP --helo=NAME --from=ADDRESS]\n"
               "                                  SPF, DKIM, DMARC, ARC and the Authentication-Results\n"
               "  arc seal FILE [--domain=D --selector=S] [--auth-results=TEXT]\n"
               "                                  Print the message with a new ARC set\n"
               "  arc sign FILE --domain=D [--selector=S] [--canonicalization=C] [--algorithm=A]\n"
               "                                  Print the message DKIM-signed\n"
               "\n"
               "Options:\n"
               "  -h --help            Show this help\n"
               "     --version         Show the version\n"
               "     --more            Ask for several replies (output as JSON-SEQ)\n"
               "     --oneway          Send the call and ask for no reply\n"
               "     --json=MODE       short or pretty JSON output\n"
               "  -j                   pretty JSON on a terminal, short otherwise\n"
               "  -q --quiet           Do not print the reply\n"
               "     --timeout=SECONDS Give up on a call after this long (default 45, status 5)\n"
               "     --runtime-dir=DIR Where the services' sockets are (default %s)\n"
               "\n"
               "ADDRESS is unix:/path/to/socket or a path.\n",
               HALYARD_RUNDIR);
}

int main(int argc, char **argv) {
        enum { ARG_VERSION = 0x100, ARG_MORE, ARG_ONEWAY, ARG_JSON, ARG_TIMEOUT, ARG_RUNTIME_DIR, ARG_STATE, ARG_DOMAIN, ARG_SENDER,
               ARG_IP, ARG_HELO, ARG_FROM, ARG_SELECTOR, ARG_AUTH_RESULTS, ARG_CANONICALIZATION,
               ARG_ALGORITHM };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "more", no_argument, NULL, ARG_MORE },
                { "oneway", no_argument, NULL, ARG_ONEWAY },
                { "json", required_argument, NULL, ARG_JSON },
                { "quiet", no_argument, NULL, 'q' },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "runtime-dir", required_argument, NULL, ARG_RUNTIME_DIR },
                { "state", required_argument, NULL, ARG_STATE },
                { "domain", required_argument, NULL, ARG_DOMAIN },
                { "sender", required_argument, NULL, ARG_SENDER },
                { "ip", required_argument, NULL, ARG_IP },
                { "helo", required_argument, NULL, ARG_HELO },
                { "from", required_argument, NULL, ARG_FROM },
                { "selector", required_argument, NULL, ARG_SELECTOR },
                { "auth-results", required_argument, NULL, ARG_AUTH_RESULTS },
                { "canonicalization", required_argument, NULL, ARG_CANONICALIZATION },
                { "algorithm", required_argument, NULL, ARG_ALGORITHM },
                {}
        };
        static const struct {
                const char *name;
                int (*fn)(const CtlOptions *o, int argc, char **argv);
        } verbs[] = {
                { "status", verb_status },
                { "info", verb_info },
                { "list-interfaces", verb_list_interfaces },
                { "introspect", verb_introspect },
                { "call", verb_call },
                { "queue", verb_queue },
                { "tlsrpt", verb_tlsrpt },
                { "policy", verb_policy },
                { "arc", verb_arc },
        };
        CtlOptions o = { .json = JSON_AUTO };
        int c;

        o.runtime_dir = getenv("HALYARD_RUNTIME_DIR");
        if (!o.runtime_dir || !*o.runtime_dir)
                o.runtime_dir = HALYARD_RUNDIR;

        while ((c = getopt_long(argc, argv, "hjq", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return CTL_EXIT_OK;
                case ARG_VERSION:
                        printf("halyardctl %s\n", HALYARD_VERSION);
                        return CTL_EXIT_OK;
                case ARG_MORE:
                        o.more = true;
                        break;
                case ARG_ONEWAY:
                        o.oneway = true;
                        break;
                case ARG_JSON:
                        if (strcmp(optarg, "short") == 0)
                                o.json = JSON_SHORT;
                        else if (strcmp(optarg, "pretty") == 0)
                                o.json = JSON_PRETTY;
                        else {
                                fprintf(stderr, "Unknown --json= mode: %s (short or pretty)\n", optarg);
                                return CTL_EXIT_USAGE;
                        }
                        o.json_set = true;
                        break;
                case 'j':
                        o.json = JSON_AUTO;
                        o.json_set = true;
                        break;
                case 'q':
                        o.quiet = true;
                        break;
                case ARG_TIMEOUT: {
                        uint64_t usec;
                        if (config_parse_duration(optarg, &usec) < 0) {
                                fprintf(stderr, "Invalid --timeout=: %s\n", optarg);
                                return CTL_EXIT_USAGE;
                        }
                        o.timeout_usec = usec;
                        break;
                }
                case ARG_RUNTIME_DIR:
                        o.runtime_dir = optarg;
                        break;
                case ARG_STATE:
                        o.state = optarg;
                        break;
                case ARG_DOMAIN:
                        o.domain = optarg;
                        break;
                case ARG_SENDER:
                        o.sender = optarg;
                        break;
                case ARG_IP:
                        o.arc_ip = optarg;
                        break;
                case ARG_HELO:
                        o.arc_helo = optarg;
                        break;
                case ARG_FROM:
                        o.arc_from = optarg;
                        break;
                case ARG_SELECTOR:
                        o.arc_selector = optarg;
                        break;
                case ARG_AUTH_RESULTS:
                        o.arc_auth_results = optarg;
                        break;
                case ARG_CANONICALIZATION:
                        o.arc_canonicalization = optarg;
                        break;
                case ARG_ALGORITHM:
                        o.arc_algorithm = optarg;
                        break;
                default:
                        return CTL_EXIT_USAGE;
                }
        }
        if (o.more && o.oneway) {
                fprintf(stderr, "--more and --oneway cannot be combined.\n");
                return CTL_EXIT_USAGE;
        }
        if (optind >= argc) {
                help();
                return CTL_EXIT_USAGE;
        }
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(argv[optind], verbs[i].name) == 0)
                        return verbs[i].fn(&o, argc - optind - 1, argv + optind + 1);
        fprintf(stderr, "Unknown command: %s (see halyardctl --help)\n", argv[optind]);
        return CTL_EXIT_USAGE;
}
