/* Compression codecs for update vectors (issue 19): pure maths on flat float32 buffers
 * and byte buffers, no I/O. A codec turns n floats into a self-describing byte stream
 * whose size depends only on the codec and n (fed_codec_size), and back:
 *
 *   fp16, bf16   each float rounded to nearest even (relative error <= 2^-11, 2^-8)
 *   q8, q4       stochastic (unbiased) uniform quantization in blocks of 256 floats:
 *                each block stores its minimum lo and its step (max - lo) / (L - 1),
 *                L = 256 or 16 levels, then one code per float, x' = lo + code * step,
 *                code = floor((x - lo) / step + u), u uniform in [0, 1) from the seed:
 *                E[x'] = x and |x' - x| < step (the block's range / 255 or / 15)
 *   topk:F       the k = ceil(F n) floats of largest magnitude (ties: the lower index),
 *                their indices (u32, increasing) and their values, in f32 or in one of
 *                the dense codecs above ("topk:0.01+q8"); the rest decode as 0
 *
 * Stream layout, little-endian: a 24-byte header
 *   u8 codec (1 fp16, 2 bf16, 3 q8, 4 q4, 5 topk)
 *   u8 values (topk: the codec of its values, 0 f32 .. 4 q4; dense codecs: 0)
 *   u16 block (q8, q4 and topk over them: floats per block, 256; otherwise 0)
 *   u32 zero, u64 n (floats of the vector), u64 k (floats carried: n, or topk's k)
 * then, for topk, k u32 indices; then the k values: fp16/bf16 k u16; q8/q4 the blocks'
 * (lo, step) f32 pairs, then the codes (q4: two a byte, the first in the low nibble, a
 * last odd nibble 0); f32 k floats. The decoder checks every field of that (codec,
 * values, block, zero, n against the caller's, k, the exact length, increasing indices
 * below n, finite scales, no Inf/NaN half floats), so a stream that decodes gives n
 * finite floats. What does not live here: the wire (proto/), choosing a codec (the
 * coordinator's --compress), error feedback (the site's "compress" stage). */
#ifndef FED_CODEC_H
#define FED_CODEC_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

/* Codec ids: the header's codec and values bytes. */
typedef enum fed_codec_id {
    FED_CODEC_F32 = 0, /* uncompressed ("none"; as values of topk: plain f32) */
    FED_CODEC_F16 = 1,
    FED_CODEC_BF16 = 2,
    FED_CODEC_Q8 = 3,
    FED_CODEC_Q4 = 4,
    FED_CODEC_TOPK = 5,
} fed_codec_id;

#define FED_CODEC_HEADER 24  /* bytes of the stream's header */
#define FED_CODEC_BLOCK  256 /* floats per quantization block */
#define FED_CODEC_NAME   48  /* longest name fed_codec_name writes, with its NUL */

/* A codec: what --compress names. */
typedef struct fed_codec {
    fed_codec_id id;     /* F32 (no compression), F16, BF16, Q8, Q4 or TOPK */
    fed_codec_id values; /* TOPK: the codec of the values kept (F32..Q4); else F32 */
    double fraction;     /* TOPK: share of the floats kept, in (0, 1]; else 0 */
} fed_codec;

/* Parses "none", "fp16", "bf16", "q8", "q4", "topk:F" or "topk:F+fp16|bf16|q8|q4" (F a
 * decimal in (0, 1]). FED_EINVAL with a line that names the text and lists the forms. */
fed_err fed_codec_parse(fed_codec *out, const char *text) FED_MUST_USE;
/* The canonical name of c ("topk:0.01+q8") into buf (FED_CODEC_NAME bytes). */
void fed_codec_name(const fed_codec *c, char buf[FED_CODEC_NAME]);
/* Whether c compresses at all (not "none"). */
int fed_codec_on(const fed_codec *c);

/* Floats carried for a vector of n: n, or topk's k = ceil(fraction n), at least 1. */
size_t fed_codec_kept(const fed_codec *c, size_t n);
/* Exact bytes of c's stream for a vector of n floats (0 for "none": no stream). */
size_t fed_codec_size(const fed_codec *c, size_t n);

/* Encodes x (n floats, all finite) into out (fed_codec_size(c, n) bytes, out_len). The
 * stochastic rounding of q8/q4 draws from seed (same seed, same bytes). sent (n floats,
 * or NULL): what the stream decodes to, for error feedback. FED_ENONFINITE for a value
 * that is not finite, FED_ERANGE for one that fp16 (|x| > 65504) or bf16 cannot hold or
 * a block whose range overflows, FED_EINVAL for a wrong out_len or c "none", FED_ENOMEM. */
fed_err fed_codec_encode(const fed_codec *c, const float *x, size_t n, uint64_t seed, uint8_t *out,
                         size_t out_len, float *sent) FED_MUST_USE;

/* Decodes the stream in (len bytes) into out (n floats: n must be the stream's). *got
 * (may be NULL) receives the codec the header names (fraction: k / n). FED_EFORMAT with a
 * line that names the field at fault. */
fed_err fed_codec_decode(const uint8_t *in, size_t len, float *out, size_t n,
                         fed_codec *got) FED_MUST_USE;

/* The scalar conversions (round to nearest even; finite input within range). */
uint16_t fed_f32_to_f16(float x);
float fed_f16_to_f32(uint16_t h);
uint16_t fed_f32_to_bf16(float x);
float fed_bf16_to_f32(uint16_t h);

#endif
