/* SPDX-License-Identifier: MIT */
/* Fuzzes the varlink IDL parser and, for every text that parses, the
 * validator: a few fixed JSON objects are checked against each method's
 * input and output and against a few error names. If the input holds a NUL
 * byte, the bytes after it are parsed as one more JSON object, so the fuzzer
 * can also steer the parameters. Parse failures must come with a position
 * and a message. */

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "varlink-idl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

DEFINE_TRIVIAL_CLEANUP_FUNC(VarlinkIdl *, varlink_idl_free);

static const char *const fixed_json[] = {
        "{}",
        "{\"a\":1}",
        "{\"a\":null}",
        "{\"a\":\"x\",\"b\":true,\"c\":1.5,\"d\":[1,2],\"e\":{\"f\":null}}",
        "{\"interface\":\"org.varlink.service\"}",
        "{\"vendor\":\"v\",\"product\":\"p\",\"version\":\"1\",\"url\":\"u\",\"interfaces\":[\"a.b\"]}",
        "{\"x\":[{\"y\":{\"z\":[]}}],\"m\":{\"k\":{}}}",
        "[]",
        "\"string\"",
};

static void check(const VarlinkIdl *idl, const char *method, json_object *params) {
        int (*const fns[])(const VarlinkIdl *, const char *, json_object *, char **) = {
                varlink_idl_validate_input,
                varlink_idl_validate_output,
                varlink_idl_validate_error,
        };

        for (size_t i = 0; i < ELEMENTSOF(fns); i++) {
                char *field = NULL;
                int r = fns[i](idl, method, params, &field);
                if (r == -EINVAL ? !field : (r != 0 && r != -ENOENT && r != -ENOMEM) || field)
                        abort();
                free(field);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(varlink_idl_freep) VarlinkIdl *idl = NULL;
        _cleanup_free_ char *text = NULL;
        VarlinkIdlError e = {};
        json_object *params[ELEMENTSOF(fixed_json) + 1] = {};
        size_t n_params = 0;

        if (size > 2 * 1024 * 1024)
                return 0;

        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;

        int r = varlink_idl_parse(text, &idl, &e);
        if (r < 0) {
                if (idl || e.line == 0 || e.column == 0 || e.message[0] == 0 ||
                    !memchr(e.message, 0, sizeof e.message))
                        abort();
                return 0;
        }
        if (!idl || !varlink_idl_name(idl))
                abort();

        for (size_t i = 0; i < ELEMENTSOF(fixed_json); i++)
                params[n_params++] = json_tokener_parse(fixed_json[i]);
        size_t len = strlen(text);
        if (len < size)
                params[n_params++] = json_tokener_parse(text + len + 1);

        unsigned n = varlink_idl_n_methods(idl);
        for (unsigned i = 0; i < n; i++) {
                const char *method = varlink_idl_method_name(idl, i);
                if (!method || !varlink_idl_has_method(idl, method) || varlink_idl_has_error(idl, method))
                        abort();
                check(idl, method, NULL);
                for (size_t j = 0; j < n_params; j++)
                        check(idl, method, params[j]);
        }
        if (varlink_idl_method_name(idl, n))
                abort();

        static const char *const errors[] = { "Error", "Failed", "InvalidParameter", "E", "NotFound" };
        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                check(idl, errors[i], NULL);
                for (size_t j = 0; j < n_params; j++)
                        check(idl, errors[i], params[j]);
        }

        for (size_t j = 0; j < n_params; j++)
                json_object_put(params[j]);
        return 0;
}
