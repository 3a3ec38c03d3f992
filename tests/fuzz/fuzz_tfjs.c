/* libFuzzer target for TF.js graph models (models/tfjs.h) and the USE-lite checks behind
 * them (models/use_lite.h). The first two bytes give the length of model.json (modulo
 * what is left); the rest is the one shard, "group1-shard1of1". Both go into a tar
 * archive in memory (headers written here, checksums right), read as a package. Any input
 * either reads (and then USE-lite's import succeeds or fails cleanly) or fails with
 * FED_EFORMAT / FED_EUNSUPPORTED / FED_ERANGE / FED_ENOTFOUND. Never a crash. */
#include "models/pkg.h"
#include "models/tfjs.h"
#include "models/use_lite.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One ustar entry at out (512-byte header, data, padding); returns the bytes written. */
static size_t entry(uint8_t *out, const char *name, const uint8_t *p, size_t n) {
    uint8_t *h = out;
    memset(h, 0, 512);
    memcpy(h, name, strlen(name));
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)n);
    memcpy(h + 136, "00000000000", 12);
    h[156] = '0';
    memcpy(h + 257,
           "ustar\0"
           "00",
           8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    if (n) memcpy(out + 512, p, n);
    size_t padded = (n + 511) / 512 * 512;
    memset(out + 512 + n, 0, padded - n);
    return 512 + padded;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2 || size > (1u << 20)) return 0;
    size_t rest = size - 2;
    size_t k = ((size_t)data[0] << 8 | data[1]) % (rest + 1);
    uint8_t *tar = calloc(1, size + 4 * 512 + 1024);
    if (!tar) return 0;
    size_t at = entry(tar, "package/dist/model.json", data + 2, k);
    at += entry(tar + at, "package/dist/group1-shard1of1", data + 2 + k, rest - k);
    at += 1024; /* the end blocks (zeros) */
    fed_pkg *p = NULL;
    fed_tfjs *g = NULL;
    if (fed_pkg_from_memory(&p, tar, at, "fuzz.tar") != FED_OK) abort();
    fed_err err = fed_tfjs_read(&g, p);
    if (err == FED_OK) {
        for (size_t i = 0; i < fed_tfjs_num_weights(g); i++) {
            const fed_tfjs_weight *w = fed_tfjs_weight_at(g, i);
            if (w->numel) (void)fed_tfjs_f32(w, w->numel - 1);
        }
        fed_use_lite *u = NULL;
        err = fed_use_lite_read(&u, p, NULL);
        if (err == FED_OK) abort(); /* no vocab.json in the package */
        fed_use_lite_destroy(&u);
        fed_tfjs_destroy(&g);
    } else if (g || (err != FED_EFORMAT && err != FED_EUNSUPPORTED && err != FED_ERANGE &&
                     err != FED_ENOTFOUND)) {
        abort();
    }
    fed_pkg_destroy(&p);
    free(tar);
    return 0;
}
