/* SPDX-License-Identifier: MIT */
/* Replays fuzz inputs without libFuzzer, so every corpus runs as a plain
 * test with any compiler: each argument is a file, or a directory whose
 * files are all replayed. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f) {
                perror(path);
                return -1;
        }
        uint8_t *buf = NULL;
        size_t n = 0, cap = 0;
        for (;;) {
                if (n == cap) {
                        cap = cap ? cap * 2 : 4096;
                        uint8_t *nb = realloc(buf, cap);
                        if (!nb) {
                                free(buf);
                                fclose(f);
                                return -1;
                        }
                        buf = nb;
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                if (k == 0)
                        break;
                n += k;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        printf("ok - %s\n", path);
        return 0;
}

int main(int argc, char **argv) {
        int r = 0, count = 0;
        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        perror(argv[i]);
                        return 1;
                }
                if (!S_ISDIR(st.st_mode)) {
                        r |= replay_file(argv[i]);
                        count++;
                        continue;
                }
                struct dirent **names;
                int n = scandir(argv[i], &names, NULL, alphasort);
                if (n < 0) {
                        perror(argv[i]);
                        return 1;
                }
                for (int j = 0; j < n; j++) {
                        if (names[j]->d_name[0] != '.') {
                                char path[4096];
                                snprintf(path, sizeof path, "%s/%s", argv[i], names[j]->d_name);
                                r |= replay_file(path);
                                count++;
                        }
                        free(names[j]);
                }
                free(names);
        }
        if (count == 0) {
                fprintf(stderr, "no inputs replayed\n");
                return 1;
        }
        return r ? 1 : 0;
}
