/* SPDX-License-Identifier: MIT */
#pragma once

/* The varlink interface definition language (varlink.org, Interface-Definition):
 * parse an interface's IDL text once at registration, then check calls and
 * replies against it. The text itself stays the caller's (it is what
 * GetInterfaceDescription serves); the parsed form keeps no pointer into it.
 *
 * Ownership: varlink_idl_parse() returns a new VarlinkIdl freed with
 * varlink_idl_free(); every other function borrows its arguments. */

#include <json-c/json.h>
#include <stdbool.h>

typedef struct VarlinkIdl VarlinkIdl;

typedef struct VarlinkIdlError {
        unsigned line;   /* 1-based */
        unsigned column; /* 1-based */
        char message[160];
} VarlinkIdlError;

/* Parses IDL text. On failure returns -EINVAL (or -ENOMEM) and, when
 * reterr is given, fills in where and why. Rejects everything the grammar
 * rejects: bad names, duplicate member names, unknown type references,
 * `[]?T`, missing `interface` line, trailing garbage. */
int varlink_idl_parse(const char *text, VarlinkIdl **ret, VarlinkIdlError *reterr);
VarlinkIdl *varlink_idl_free(VarlinkIdl *idl);

/* The interface name, e.g. "io.halyard.Queue". */
const char *varlink_idl_name(const VarlinkIdl *idl);

/* Unqualified member names ("GetStatus"). */
bool varlink_idl_has_method(const VarlinkIdl *idl, const char *method);
bool varlink_idl_has_error(const VarlinkIdl *idl, const char *error);

/* Number of methods and the n-th method name in declaration order. */
unsigned varlink_idl_n_methods(const VarlinkIdl *idl);
const char *varlink_idl_method_name(const VarlinkIdl *idl, unsigned i);

/* Checks a method's input (or output) parameters against its declaration.
 * parameters may be NULL (same as {}). Rules: unknown fields are refused,
 * non-nullable fields must be present and non-null, types must match
 * (int: a JSON integer; float: any number; enums: one of the names; object:
 * any object; maps: objects whose values match; nested structs recursively).
 * Returns 0 when valid, -ENOENT when the method is not declared, -EINVAL when
 * invalid; then *ret_field (if given) is set to a newly allocated name of the
 * offending top-level parameter, which the caller frees. *ret_field is set
 * only on -EINVAL and is never NULL then: when parameters is neither NULL nor
 * an object it is "parameters". Values of a `[string]()` map are not checked
 * (it is a set; systemd sends {} values). -ENOMEM if that name cannot be
 * allocated. */
int varlink_idl_validate_input(const VarlinkIdl *idl, const char *method,
                               json_object *parameters, char **ret_field);
int varlink_idl_validate_output(const VarlinkIdl *idl, const char *method,
                                json_object *parameters, char **ret_field);
/* Same for an error's parameters. */
int varlink_idl_validate_error(const VarlinkIdl *idl, const char *error,
                               json_object *parameters, char **ret_field);
