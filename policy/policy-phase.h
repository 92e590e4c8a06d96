/* SPDX-License-Identifier: MIT */
#pragma once

/* The SMTP phases a policy has handlers for. Kept apart from the syntax tree
 * so that embedders including policy.h get no parser names. */

#include <errno.h>

typedef enum PolicyPhase {
        POLICY_PHASE_CONNECT,
        POLICY_PHASE_HELO,
        POLICY_PHASE_AUTH,
        POLICY_PHASE_MAILFROM,
        POLICY_PHASE_RCPTTO,
        POLICY_PHASE_EOD,
        POLICY_PHASE_DISCONNECT,
        _POLICY_PHASE_MAX,
        _POLICY_PHASE_INVALID = -EINVAL,
} PolicyPhase;

#define POLICY_PHASE_BIT(p) (1U << (p))
#define POLICY_PHASES_ALL ((1U << _POLICY_PHASE_MAX) - 1)

const char *policy_phase_to_string(PolicyPhase p);
PolicyPhase policy_phase_from_string(const char *s);
