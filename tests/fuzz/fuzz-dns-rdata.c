/* SPDX-License-Identifier: MIT */
/* Fuzzes dns_parse_rdata(): the first input byte picks the record type
 * (A, AAAA, MX, TXT, TLSA, CNAME, or an unsupported one), the rest is the
 * rdata. Every successful parse is checked against the input it came from
 * (lengths can only shrink, names fit their buffer and carry no raw dot
 * inside a label) and released: a leak is a finding. The rest of the input
 * also goes to dns_name_to_text() as a bare name. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint16_t types[] = {
        DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX, DNS_TYPE_TXT, DNS_TYPE_TLSA, DNS_TYPE_CNAME, 99,
};

static void check_name(const char *name, size_t wire_len) {
        size_t l = strlen(name);
        if (l == 0 || l >= DNS_NAME_TEXT_MAX || l > 4 * wire_len)
                abort();
        for (size_t i = 0; i < l; i++) {
                unsigned char c = (unsigned char) name[i];
                if (c < 0x21 || c > 0x7e || (c >= 'A' && c <= 'Z'))
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char text[DNS_NAME_TEXT_MAX];
        DnsRecord rec;

        if (size < 1)
                return 0;
        uint16_t type = types[data[0] % (sizeof types / sizeof types[0])];
        const uint8_t *rdata = data + 1;
        size_t len = size - 1;

        /* a private copy, so reads past the end are caught by ASan */
        uint8_t *copy = malloc(len ? len : 1);
        if (!copy)
                return 0;
        if (len > 0)
                memcpy(copy, rdata, len);

        if (dns_parse_rdata(type, copy, len, &rec) == 0) {
                if (rec.type != type)
                        abort();
                switch (type) {
                case DNS_TYPE_MX:
                        check_name(rec.mx.exchange, len - 2);
                        break;
                case DNS_TYPE_CNAME:
                        check_name(rec.cname.target, len);
                        break;
                case DNS_TYPE_TXT:
                        if (rec.txt.len + rec.txt.n_strings != len || rec.txt.text[rec.txt.len] != 0)
                                abort();
                        break;
                case DNS_TYPE_TLSA:
                        if (rec.tlsa.len + 3 != len || (len > 3 && memcmp(rec.tlsa.data, copy + 3, rec.tlsa.len)))
                                abort();
                        break;
                }
                dns_record_done(&rec);
        }

        if (dns_name_to_text(copy, len, text) == 0)
                check_name(text, len);

        free(copy);
        return 0;
}
