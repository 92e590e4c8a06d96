/* SPDX-License-Identifier: MIT */
#pragma once

/* The load-time checker. policy_check() (declared in policy-internal.h) runs
 * over all files of a generation and reports, each as file:line:col:
 *
 *  errors:   unknown variables and functions (including ARC::x and ->x()),
 *            reads of locals before any assignment, arity, literal argument
 *            types, unknown keys in literal option maps, literal SMTP codes
 *            of the wrong class, unknown log levels, builtins used in a
 *            phase where they are unavailable (also through user functions),
 *            $arguments["x"] keys the phase does not have, writes to
 *            read-only variables and constants, `cache` on a builtin that is
 *            not cacheable, unknown or non-literal cache options, regexes
 *            that do not compile, recursion (the call graph must be
 *            acyclic), break/continue outside foreach, return with a value
 *            from a handler, duplicate handlers/functions/constants,
 *            handlers outside the entry file, bad imports, const
 *            initialisers that are not constant, a file_lookup() map path
 *            that is not a string literal or constant (it registers the
 *            map, which the loader then reads);
 *  warnings: code after a statement that always ends the handler, auth and
 *            rcptto handlers that can end without a verdict, a missing
 *            rcptto handler (the embedder's built-in relay control
 *            decides), comparing a bool literal with a number literal, a
 *            Mail header edit after ARC::seal() in the same body.
 *
 * The phase's $arguments keys, for the docs and the checker alike: */

#include "policy-ast.h"

/* NULL-terminated list of the $arguments keys of a phase. */
const char *const *policy_phase_arguments(PolicyPhase p);
