/* The checks of USE-lite's TF.js graph (use_lite.h): node by node, the computation the
 * converter assumes, and the constants it relies on. A check is an op, a node name and
 * the node's exact data inputs ("*" where the input is shape plumbing that does not
 * matter), plus the attributes that change the maths (transposes, strides, kept
 * dimensions). Names are TensorFlow's, built from the prefixes below. */
#include "models/use_lite_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define K   "module_apply_default/Encoder_en/KonaTransformer/"
#define E   K "Encode/"
#define TS  E "TransformerStack/"
#define MOD "module/Encoder_en/KonaTransformer/Encode/"
#define HID "module_apply_default/Encoder_en/hidden_layers/"
#define ABP TS "Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/"
#define TSG TS "Layer_0/AddTimingSignal/"

/* Shared constants and the nodes many others read. */
#define AXIS0 K "SequenceMask/Const"                                          /* 0 */
#define ONE   ABP "attention_bias_ignore_padding/ExpandDims/dim"              /* 1 */
#define AXIS2 TS "Layer_1/TransformerLayer/MultiheadAttention/ExpandDims/dim" /* 2 */
#define LASTAXIS                                                                                   \
    TS "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Mean/reduction_indices"
#define EPS   TS "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x"
#define COL01 "ConstantFolding/" TS "Layer_1/TransformerLayer/FFN/conv1/Tensordot/ListDiff-folded-0"
#define COL02 TSG "strided_slice_2/stack_1"
#define COL11 TSG "strided_slice_2/stack_2"
#define PERM  TS "Layer_1/TransformerLayer/MultiheadAttention/split_heads/transpose/perm"
#define HEADS                                                                                      \
    TS "Layer_1/TransformerLayer/MultiheadAttention/split_heads/split_last_dimension/Reshape/"     \
       "shape/2"
#define BIAS  ABP "attention_bias_ignore_padding/ExpandDims_1"
#define VALID TS "Layer_1/TransformerLayer/FFN/StoreMask/ToInt32" /* positions of the ids */
#define MASK  E "Greater"                                         /* id > -1 */

/* Rotating name buffers: a check builds its names right before it runs. */
typedef struct names {
    char s[32][320];
    int next;
} names;

static const char *nm(names *b, const char *fmt, ...) FED_PRINTF(2, 3);
static const char *nm(names *b, const char *fmt, ...) {
    char *s = b->s[b->next++ % 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof b->s[0], fmt, ap);
    va_end(ap);
    return s;
}

static fed_err bad(const fed_tfjs *g, const char *node, const char *fmt, ...) FED_PRINTF(3, 4);
static fed_err bad(const fed_tfjs *g, const char *node, const char *fmt, ...) {
    char why[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return fed_errorf(FED_EFORMAT, "%s: node \"%s\": %s (not the USE-lite graph fedtune imports)",
                      fed_tfjs_what(g), node, why);
}

/* Node `name` is an `op` whose data inputs are exactly the NULL-terminated list ("*":
 * any). */
static fed_err expect(const fed_tfjs *g, const char *op, const char *name, ...) {
    const fed_tfjs_node *n = fed_tfjs_node_find(g, name);
    if (!n) return bad(g, name, "missing");
    if (strcmp(n->op, op) != 0) return bad(g, name, "op %s, expected %s", n->op, op);
    va_list ap;
    va_start(ap, name);
    size_t k = 0;
    fed_err err = FED_OK;
    for (const char *in; !err && (in = va_arg(ap, const char *)); k++) {
        if (k >= n->ninputs)
            err = bad(g, name, "%zu inputs, expected more", n->ninputs);
        else if (strcmp(in, "*") != 0 && strcmp(n->inputs[k], in) != 0)
            err = bad(g, name, "input %zu is \"%s\", expected \"%s\"", k, n->inputs[k], in);
    }
    va_end(ap);
    if (!err && k != n->ninputs) err = bad(g, name, "%zu inputs, expected %zu", n->ninputs, k);
    return err;
}

static fed_err expect_bool(const fed_tfjs *g, const char *name, const char *key, bool want) {
    bool v;
    if (!fed_tfjs_attr_bool(g, fed_tfjs_node_find(g, name), key, &v) || v != want)
        return bad(g, name, "attribute %s must be %s", key, want ? "true" : "false");
    return FED_OK;
}

static fed_err expect_ints(const fed_tfjs *g, const char *name, const char *key, size_t n,
                           const long long *want) {
    long long v[8];
    size_t count = 0;
    if (!fed_tfjs_attr_ints(g, fed_tfjs_node_find(g, name), key, v, 8, &count) || count != n)
        return bad(g, name, "attribute %s must be a list of %zu ints", key, n);
    for (size_t i = 0; i < n; i++)
        if (v[i] != want[i])
            return bad(g, name, "attribute %s[%zu] is %lld, expected %lld", key, i, v[i], want[i]);
    return FED_OK;
}

static fed_err expect_str(const fed_tfjs *g, const char *name, const char *key, const char *want) {
    char v[32];
    if (!fed_tfjs_attr_str(g, fed_tfjs_node_find(g, name), key, v, sizeof v) || strcmp(v, want))
        return bad(g, name, "attribute %s must be \"%s\"", key, want);
    return FED_OK;
}

/* ---- constants ------------------------------------------------------------------------ */

static const fed_tfjs_weight *konst(const fed_tfjs *g, bool *used, const char *name,
                                    fed_tfjs_dtype dtype, size_t numel) {
    const fed_tfjs_weight *w = fed_tfjs_weight_find(g, name);
    if (!w || w->dtype != dtype || w->numel != numel) return NULL;
    used[w - fed_tfjs_weight_at(g, 0)] = true;
    return w;
}

/* Int constant `name` holds exactly want[0..n). */
static fed_err const_ints(const fed_tfjs *g, bool *used, const char *name, size_t n,
                          const int32_t *want) {
    const fed_tfjs_weight *w = konst(g, used, name, FED_TFJS_I32, n);
    if (!w) return bad(g, name, "must be an int32 constant of %zu values", n);
    for (size_t i = 0; i < n; i++)
        if (fed_tfjs_i32(w, i) != want[i])
            return bad(g, name, "value %zu is %d, the converter assumes %d", i,
                       (int)fed_tfjs_i32(w, i), (int)want[i]);
    return FED_OK;
}

static fed_err const_int(const fed_tfjs *g, bool *used, const char *name, int32_t want) {
    return const_ints(g, used, name, 1, &want);
}

/* Float scalar `name` is want to rel relative. */
static fed_err const_float(const fed_tfjs *g, bool *used, const char *name, double want,
                           double rel) {
    const fed_tfjs_weight *w = konst(g, used, name, FED_TFJS_F32, 1);
    if (!w) return bad(g, name, "must be a float32 scalar");
    double v = (double)fed_tfjs_f32(w, 0);
    if (!(fabs(v - want) <= rel * fabs(want)))
        return bad(g, name, "is %.9g, the converter assumes %.9g", v, want);
    return FED_OK;
}

/* The timing signal's inverse timescales: exp(-i ln(1e4) / 127), i < 128. */
static fed_err timescales(const fed_tfjs *g, bool *used) {
    const char *name = TSG "TimingSignal/ExpandDims_1";
    const fed_tfjs_weight *w = konst(g, used, name, FED_TFJS_F32, 128);
    if (!w || w->ndim != 2 || w->shape[0] != 1)
        return bad(g, name, "must be a float32 constant of shape [1, 128]");
    for (size_t i = 0; i < 128; i++) {
        double want = exp(-(double)i * log(1e4) / 127.0), v = (double)fed_tfjs_f32(w, i);
        if (!(fabs(v - want) <= 1e-6 * want))
            return bad(g, name, "inverse timescale %zu is %.9g, exp(-%zu ln(1e4) / 127) is %.9g", i,
                       v, i, want);
    }
    return FED_OK;
}

static fed_err constants(const fed_tfjs *g, bool *used) {
    static const int32_t col01[] = {0, 1}, col02[] = {0, 2}, col11[] = {1, 1},
                         perm[] = {0, 2, 1, 3};
    fed_err err;
    if ((err = const_int(g, used, AXIS0, 0)) || (err = const_int(g, used, ONE, 1)) ||
        (err = const_int(g, used, AXIS2, 2)) ||
        (err = const_ints(g, used, LASTAXIS, 1, (const int32_t[]){-1})) ||
        (err = const_ints(g, used, COL01, 2, col01)) ||
        (err = const_ints(g, used, COL02, 2, col02)) ||
        (err = const_ints(g, used, COL11, 2, col11)) ||
        (err = const_ints(g, used, PERM, 4, perm)) || (err = const_int(g, used, HEADS, 4)) ||
        (err = const_int(g, used, ABP "BaseDotProductAttention/Slice/begin", 3)) ||
        (err = const_int(g, used, TS "Layer_1/TransformerLayer/FFN/Scatter/strided_slice/stack",
                         1)) ||
        (err = const_int(g, used, K "ClipToMaxLength/Less/y", 128)) ||
        (err = const_int(g, used, E "SparseToDense/default_value", -1)) ||
        (err = const_int(g, used, K "SequenceMask/ExpandDims/dim", -1)) ||
        (err = const_float(g, used, EPS, 1e-6, 1e-6)) ||
        (err = const_float(g, used, ABP "attention_bias_ignore_padding/mul/y", -1e9, 1e-6)) ||
        (err = const_float(g, used, HID "l2_normalize/Maximum/y", 1e-12, 1e-6)))
        return err;
    names b = {0};
    for (int l = 0; l < 2; l++) {
        int d = l == 0 ? 256 : 512;
        const char *mha = nm(&b, TS "Layer_%d/TransformerLayer/MultiheadAttention/", l);
        if ((err = const_ints(g, used, nm(&b, "%sConst", mha), 3, (const int32_t[]){d, d, d})) ||
            (err = const_int(g, used,
                             nm(&b, "%ssplit_heads/split_last_dimension/Reshape/shape/3", mha),
                             d / 4)) ||
            (err = const_int(
                 g, used,
                 nm(&b, "%scombine_heads/combine_last_two_dimensions/Reshape/shape/2", mha), d)) ||
            (err = const_float(g, used, nm(&b, "%smul/y", mha), 1.0 / sqrt(d / 4.0), 1e-6)))
            return err;
    }
    return timescales(g, used);
}

/* ---- nodes ---------------------------------------------------------------------------- */

/* ids clipped to positions < 128, made dense with -1, the mask, the embeddings at the
 * valid positions, the timing signal; x0 = Layer_0/add. */
static fed_err inputs(const fed_tfjs *g) {
    fed_err err;
    if ((err = expect(g, "StridedSlice", K "ClipToMaxLength/strided_slice", "indices", COL01, COL02,
                      COL11, NULL)) ||
        (err = expect(g, "Less", K "ClipToMaxLength/Less", K "ClipToMaxLength/strided_slice",
                      K "ClipToMaxLength/Less/y", NULL)) ||
        (err = expect(g, "Where", K "ClipToMaxLength/Where", K "ClipToMaxLength/Less", NULL)) ||
        (err = expect(g, "Reshape", K "ClipToMaxLength/Reshape", K "ClipToMaxLength/Where",
                      LASTAXIS, NULL)) ||
        (err = expect(g, "GatherV2", K "ClipToMaxLength/GatherV2", "indices",
                      K "ClipToMaxLength/Reshape", AXIS0, NULL)) ||
        (err = expect(g, "GatherV2", K "ClipToMaxLength/GatherV2_1", "values",
                      K "ClipToMaxLength/Reshape", AXIS0, NULL)) ||
        (err = expect(g, "SparseToDense", E "SparseToDense", K "ClipToMaxLength/GatherV2", "*",
                      K "ClipToMaxLength/GatherV2_1", E "SparseToDense/default_value", NULL)) ||
        (err = expect(g, "Greater", MASK, E "SparseToDense", E "SparseToDense/default_value",
                      NULL)) ||
        (err = expect(g, "Where", TS "Layer_1/TransformerLayer/FFN/StoreMask/Where", MASK, NULL)) ||
        (err = expect(g, "Cast", VALID, TS "Layer_1/TransformerLayer/FFN/StoreMask/Where", NULL)) ||
        (err = expect(g, "GatherV2", E "embedding_lookup", "module/Embeddings_en",
                      K "ClipToMaxLength/GatherV2_1", AXIS0, NULL)) ||
        (err =
             expect(g, "ScatterNd", E "Scatter/ScatterNd", VALID, E "embedding_lookup", "*", NULL)))
        return err;
    /* The timing signal at the valid positions: column 1 of their coordinates. */
    if ((err = expect(g, "StridedSlice", TSG "strided_slice_2",
                      TS "Layer_1/TransformerLayer/FFN/StoreMask/Where", COL01, COL02, COL11,
                      NULL)) ||
        (err = expect(g, "Cast", TSG "TimingSignal/ToFloat_2", TSG "strided_slice_2", NULL)) ||
        (err = expect(g, "ExpandDims", TSG "TimingSignal/ExpandDims", TSG "TimingSignal/ToFloat_2",
                      ONE, NULL)) ||
        (err = expect(g, "Mul", TSG "TimingSignal/mul_2", TSG "TimingSignal/ExpandDims",
                      TSG "TimingSignal/ExpandDims_1", NULL)) ||
        (err = expect(g, "Sin", TSG "TimingSignal/Sin", TSG "TimingSignal/mul_2", NULL)) ||
        (err = expect(g, "Cos", TSG "TimingSignal/Cos", TSG "TimingSignal/mul_2", NULL)) ||
        (err = expect(g, "ConcatV2", TSG "TimingSignal/concat", TSG "TimingSignal/Sin",
                      TSG "TimingSignal/Cos", ONE, NULL)) ||
        (err = expect(g, "GatherNd", TSG "Gather/GatherNd", E "Scatter/ScatterNd", VALID, NULL)) ||
        (err =
             expect(g, "Add", TSG "add", TSG "Gather/GatherNd", TSG "TimingSignal/concat", NULL)) ||
        (err = expect(g, "ScatterNd", TSG "Scatter/ScatterNd", VALID, TSG "add", "*", NULL)))
        return err;
    /* The embeddings a second time: x0 = 2 E[id] + timing (use_lite.h). */
    return expect(g, "Add", TS "Layer_0/add", E "Scatter/ScatterNd", TSG "Scatter/ScatterNd", NULL);
}

/* Layer norm over the last axis: (x - mean) * rsqrt(var + eps) * scale + bias. pre: the
 * node prefix (".../layer_norm/"), w: the weights' prefix. */
static fed_err layer_norm(const fed_tfjs *g, const char *pre, const char *w, const char *x) {
    names b = {0};
    fed_err err;
    const char *mean = nm(&b, "%sMean", pre), *sub = nm(&b, "%ssub_1", pre);
    const char *sq = nm(&b, "%sSquare", pre), *var = nm(&b, "%sMean_1", pre);
    const char *add = nm(&b, "%sadd", pre), *rs = nm(&b, "%sRsqrt", pre);
    const char *mul = nm(&b, "%smul", pre), *mul1 = nm(&b, "%smul_1", pre);
    if ((err = expect(g, "Mean", mean, x, LASTAXIS, NULL)) ||
        (err = expect_bool(g, mean, "keep_dims", true)) ||
        (err = expect(g, "Sub", sub, x, mean, NULL)) ||
        (err = expect(g, "Square", sq, sub, NULL)) ||
        (err = expect(g, "Mean", var, sq, LASTAXIS, NULL)) ||
        (err = expect_bool(g, var, "keep_dims", true)) ||
        (err = expect(g, "Add", add, var, EPS, NULL)) ||
        (err = expect(g, "Rsqrt", rs, add, NULL)) ||
        (err = expect(g, "Mul", mul, nm(&b, "%slayer_norm_scale/ConcatPartitions/concat", w), rs,
                      NULL)) ||
        (err = expect(g, "Mul", mul1, mul, sub, NULL)))
        return err;
    return expect(g, "Add", nm(&b, "%sadd_1", pre), mul1,
                  nm(&b, "%slayer_norm_bias/ConcatPartitions/concat", w), NULL);
}

/* A 1x1 convolution (a dense layer per position) with its bias. */
static fed_err conv1x1(const fed_tfjs *g, const char *conv, const char *bias_add, const char *x,
                       const char *kernel, const char *bias) {
    static const long long ones[4] = {1, 1, 1, 1};
    fed_err err;
    if ((err = expect(g, "Conv2D", conv, x, kernel, NULL)) ||
        (err = expect_ints(g, conv, "strides", 4, ones)) ||
        (err = expect_ints(g, conv, "dilations", 4, ones)) ||
        (err = expect_str(g, conv, "data_format", "NHWC")) ||
        (err = expect(g, "BiasAdd", bias_add, conv, bias, NULL)))
        return err;
    return expect_str(g, bias_add, "data_format", "NHWC");
}

static fed_err matmul(const fed_tfjs *g, const char *op, const char *name, const char *a,
                      const char *bm, bool tb) {
    bool batch = strcmp(op, "BatchMatMul") == 0;
    fed_err err = expect(g, op, name, a, bm, NULL);
    if (!err) err = expect_bool(g, name, batch ? "adj_x" : "transpose_a", false);
    if (!err) err = expect_bool(g, name, batch ? "adj_y" : "transpose_b", tb);
    return err;
}

/* Multi-head attention of layer l on the normalised xn, plus the residual res. */
static fed_err attention(const fed_tfjs *g, int l, const char *xn, const char *res) {
    names b = {0};
    fed_err err;
    char mha[200], dpa[260], w[200], m[200];
    snprintf(mha, sizeof mha, TS "Layer_%d/TransformerLayer/MultiheadAttention/", l);
    snprintf(dpa, sizeof dpa, "%sDotProductAttention/BaseDotProductAttention/", mha);
    snprintf(w, sizeof w, E "Layer_%d/TransformerLayer/MultiheadAttention/", l);
    snprintf(m, sizeof m, MOD "Layer_%d/TransformerLayer/MultiheadAttention/", l);
    if ((err = expect(g, "ExpandDims", nm(&b, "%sExpandDims", mha), xn, AXIS2, NULL)) ||
        (err = conv1x1(g, nm(&b, "%sqkv_transform_single/Conv2D", mha),
                       nm(&b, "%sqkv_transform_single/BiasAdd", mha), nm(&b, "%sExpandDims", mha),
                       nm(&b, "%sqkv_transform_single/kernel/part_0", m),
                       nm(&b, "%sqkv_transform_single/bias/ConcatPartitions/concat", w))) ||
        (err = expect(g, "Squeeze", nm(&b, "%sSqueeze", mha),
                      nm(&b, "%sqkv_transform_single/BiasAdd", mha), NULL)) ||
        (err = expect_ints(g, nm(&b, "%sSqueeze", mha), "squeeze_dims", 1, (long long[]){2})) ||
        (err = expect(g, "SplitV", nm(&b, "%ssplit", mha), nm(&b, "%sSqueeze", mha),
                      nm(&b, "%sConst", mha), AXIS2, NULL)))
        return err;
    /* q | k | v, each split into 4 heads of consecutive columns. */
    static const char *const part[3] = {"split_heads", "split_heads_1", "split_heads_2"};
    static const char *const out[3] = {"split", "split:1", "split:2"};
    for (int j = 0; j < 3; j++) {
        const char *sl = nm(&b, "%s%s/split_last_dimension/", mha, part[j]);
        if ((err = expect(g, "Reshape", nm(&b, "%sReshape", sl), nm(&b, "%s%s", mha, out[j]),
                          nm(&b, "%sReshape/shape", sl), NULL)) ||
            (err =
                 expect(g, "Pack", nm(&b, "%sReshape/shape", sl), "*", "*", HEADS,
                        nm(&b, "%ssplit_heads/split_last_dimension/Reshape/shape/3", mha), NULL)) ||
            (err = expect(g, "Transpose", nm(&b, "%s%s/transpose", mha, part[j]),
                          nm(&b, "%sReshape", sl), PERM, NULL)))
            return err;
    }
    /* softmax(q / sqrt(d) k^T + bias) v, the softmax over the keys (the last axis). */
    if ((err = expect(g, "Mul", nm(&b, "%smul", mha), nm(&b, "%ssplit_heads/transpose", mha),
                      nm(&b, "%smul/y", mha), NULL)) ||
        (err = matmul(g, "BatchMatMul", nm(&b, "%sMatMul", dpa), nm(&b, "%smul", mha),
                      nm(&b, "%ssplit_heads_1/transpose", mha), true)) ||
        (err = expect(g, "Add", nm(&b, "%sadd", dpa), nm(&b, "%sMatMul", dpa), BIAS, NULL)) ||
        (err = expect(g, "Shape", nm(&b, "%sShape_1", dpa), nm(&b, "%sadd", dpa), NULL)) ||
        (err = expect(g, "Slice", nm(&b, "%sSlice", dpa), nm(&b, "%sShape_1", dpa),
                      ABP "BaseDotProductAttention/Slice/begin",
                      TS "Layer_1/TransformerLayer/FFN/Scatter/strided_slice/stack", NULL)) ||
        (err = expect(g, "ConcatV2", nm(&b, "%sconcat", dpa), LASTAXIS, nm(&b, "%sSlice", dpa),
                      AXIS0, NULL)) ||
        (err = expect(g, "Reshape", nm(&b, "%sReshape", dpa), nm(&b, "%sadd", dpa),
                      nm(&b, "%sconcat", dpa), NULL)) ||
        (err = expect(g, "Softmax", nm(&b, "%sSoftmax", dpa), nm(&b, "%sReshape", dpa), NULL)) ||
        (err = expect(g, "Reshape", nm(&b, "%sattention_weights", dpa), nm(&b, "%sSoftmax", dpa),
                      nm(&b, "%sShape_1", dpa), NULL)) ||
        (err =
             matmul(g, "BatchMatMul", nm(&b, "%sMatMul_1", dpa), nm(&b, "%sattention_weights", dpa),
                    nm(&b, "%ssplit_heads_2/transpose", mha), false)))
        return err;
    /* Heads back side by side, the output projection, the residual. */
    const char *comb = nm(&b, "%scombine_heads/combine_last_two_dimensions/", mha);
    if ((err = expect(g, "Transpose", nm(&b, "%scombine_heads/transpose", mha),
                      nm(&b, "%sMatMul_1", dpa), PERM, NULL)) ||
        (err = expect(g, "Reshape", nm(&b, "%sReshape", comb),
                      nm(&b, "%scombine_heads/transpose", mha), nm(&b, "%sReshape/shape", comb),
                      NULL)) ||
        (err = expect(g, "Pack", nm(&b, "%sReshape/shape", comb), "*", "*",
                      nm(&b, "%sReshape/shape/2", comb), NULL)) ||
        (err = expect(g, "ExpandDims", nm(&b, "%sExpandDims_1", mha), nm(&b, "%sReshape", comb),
                      AXIS2, NULL)) ||
        (err = conv1x1(g, nm(&b, "%soutput_transform_single/Conv2D", mha),
                       nm(&b, "%soutput_transform_single/BiasAdd", mha),
                       nm(&b, "%sExpandDims_1", mha),
                       nm(&b, "%soutput_transform_single/kernel/part_0", m),
                       nm(&b, "%soutput_transform_single/bias/ConcatPartitions/concat", w))) ||
        (err = expect(g, "Squeeze", nm(&b, "%sSqueeze_1", mha),
                      nm(&b, "%soutput_transform_single/BiasAdd", mha), NULL)) ||
        (err = expect_ints(g, nm(&b, "%sSqueeze_1", mha), "squeeze_dims", 1, (long long[]){2})))
        return err;
    return expect(g, "Add", nm(&b, TS "Layer_%d/TransformerLayer/layer_postprocess/add", l),
                  nm(&b, "%sSqueeze_1", mha), res, NULL);
}

/* Layer 0's residual: a dense projection 256 -> 512 of x0 at the valid positions. */
static fed_err adjust_residual(const fed_tfjs *g) {
    const char *ar = TS "Layer_0/TransformerLayer/AdjustResidualInput/";
    names b = {0};
    fed_err err;
    if ((err = expect(g, "GatherNd", nm(&b, "%sGather/GatherNd", ar), TS "Layer_0/add", VALID,
                      NULL)) ||
        (err = matmul(g, "MatMul", nm(&b, "%sdense/MatMul", ar), nm(&b, "%sGather/GatherNd", ar),
                      E "Layer_0/TransformerLayer/dense/kernel/ConcatPartitions/concat", false)) ||
        (err = expect(g, "BiasAdd", nm(&b, "%sdense/BiasAdd", ar), nm(&b, "%sdense/MatMul", ar),
                      E "Layer_0/TransformerLayer/dense/bias/ConcatPartitions/concat", NULL)))
        return err;
    return expect(g, "ScatterNd", nm(&b, "%sScatter/ScatterNd", ar), VALID,
                  nm(&b, "%sdense/BiasAdd", ar), "*", NULL);
}

/* Layer l's feed-forward block on x: x + conv2(relu(conv1(LN(x)))) at the valid positions. */
static fed_err ffn(const fed_tfjs *g, int l, const char *x) {
    names b = {0};
    fed_err err;
    char f[200], w[200];
    snprintf(f, sizeof f, TS "Layer_%d/TransformerLayer/FFN/", l);
    snprintf(w, sizeof w, E "Layer_%d/TransformerLayer/FFN/", l);
    if ((err = layer_norm(g, nm(&b, "%slayer_prepostprocess/layer_norm/", f),
                          nm(&b, "%slayer_prepostprocess/layer_norm/", w), x)) ||
        (err = expect(g, "GatherNd", nm(&b, "%sGather/GatherNd", f),
                      nm(&b, "%slayer_prepostprocess/layer_norm/add_1", f), VALID, NULL)) ||
        (err = expect(g, "ExpandDims", nm(&b, "%sExpandDims", f), nm(&b, "%sGather/GatherNd", f),
                      AXIS0, NULL)))
        return err;
    const char *in = nm(&b, "%sExpandDims", f);
    static const char *const conv[2] = {"conv1", "conv2"};
    for (int c = 0; c < 2; c++) {
        const char *td = nm(&b, "%s%s/Tensordot", f, conv[c]);
        if ((err = expect(g, "Reshape", nm(&b, "%s/Reshape", td), in, nm(&b, "%s/stack", td),
                          NULL)) ||
            (err = matmul(g, "MatMul", nm(&b, "%s/MatMul", td), nm(&b, "%s/Reshape", td),
                          nm(&b, "%s/Reshape_1", td), false)) ||
            (err = expect(g, "Reshape", td, nm(&b, "%s/MatMul", td), nm(&b, "%s/concat_2", td),
                          NULL)) ||
            (err = expect(g, "BiasAdd", nm(&b, "%s%s/BiasAdd", f, conv[c]), td,
                          nm(&b, "%s%s/bias/ConcatPartitions/concat", w, conv[c]), NULL)))
            return err;
        in = nm(&b, "%s%s/BiasAdd", f, conv[c]);
        if (c == 0) {
            if ((err = expect(g, "Relu", nm(&b, "%sconv1/Relu", f), in, NULL))) return err;
            in = nm(&b, "%sconv1/Relu", f);
        }
    }
    if ((err = expect(g, "Squeeze", nm(&b, "%sSqueeze", f), in, NULL)) ||
        (err = expect_ints(g, nm(&b, "%sSqueeze", f), "squeeze_dims", 1, (long long[]){0})) ||
        (err = expect(g, "ScatterNd", nm(&b, "%sScatter/ScatterNd", f), VALID,
                      nm(&b, "%sSqueeze", f), "*", NULL)))
        return err;
    return expect(g, "Add", nm(&b, "%slayer_postprocess/add", f), nm(&b, "%sScatter/ScatterNd", f),
                  x, NULL);
}

/* The -1e9 bias on padded keys, [batch, 1, 1, keys]. */
static fed_err padding_bias(const fed_tfjs *g) {
    const char *p = ABP "attention_bias_ignore_padding/";
    names b = {0};
    fed_err err;
    if ((err = expect(g, "LogicalNot", ABP "LogicalNot", MASK, NULL)) ||
        (err = expect(g, "Cast", ABP "ToFloat", ABP "LogicalNot", NULL)) ||
        (err = expect(g, "Mul", nm(&b, "%smul", p), ABP "ToFloat", nm(&b, "%smul/y", p), NULL)) ||
        (err = expect(g, "ExpandDims", nm(&b, "%sExpandDims", p), nm(&b, "%smul", p), ONE, NULL)))
        return err;
    return expect(g, "ExpandDims", BIAS, nm(&b, "%sExpandDims", p), ONE, NULL);
}

/* sum(h * mask) / max(len, 1), tanh(dense), x / sqrt(max(sum x^2, 1e-12)); the output. */
static fed_err pooling(const fed_tfjs *g) {
    fed_err err;
    if ((err = expect(g, "Cast", TS "MaskLength/ToInt32", MASK, NULL)) ||
        (err = expect(g, "Sum", TS "MaskLength/Sum", TS "MaskLength/ToInt32", ONE, NULL)) ||
        (err = expect(g, "ExpandDims", K "SequenceMask/ExpandDims", TS "MaskLength/Sum",
                      K "SequenceMask/ExpandDims/dim", NULL)) ||
        (err = expect(g, "Range", K "SequenceMask/Range", AXIS0, K "strided_slice", ONE, NULL)) ||
        (err = expect(g, "Less", K "SequenceMask/Less", K "SequenceMask/Range",
                      K "SequenceMask/ExpandDims", NULL)) ||
        (err = expect(g, "Cast", K "ToFloat", K "SequenceMask/Less", NULL)) ||
        (err = expect(g, "ExpandDims", K "ExpandDims", K "ToFloat", AXIS2, NULL)) ||
        (err = expect(g, "Mul", K "mul", TS "Layer_1/TransformerLayer/FFN/layer_postprocess/add",
                      K "ExpandDims", NULL)) ||
        (err = expect(g, "Sum", K "Sum", K "mul", ONE, NULL)) ||
        (err = expect_bool(g, K "Sum", "keep_dims", false)) ||
        (err = expect(g, "Maximum", K "Maximum", TS "MaskLength/Sum", ONE, NULL)) ||
        (err = expect(g, "Cast", K "ToFloat_1", K "Maximum", NULL)) ||
        (err = expect(g, "ExpandDims", K "ExpandDims_1", K "ToFloat_1", ONE, NULL)) ||
        (err = expect(g, "RealDiv", K "div", K "Sum", K "ExpandDims_1", NULL)))
        return err;
    const char *l2 = HID "l2_normalize";
    if ((err = matmul(g, "MatMul", HID "tanh_layer_0/MatMul", K "div",
                      "module/Encoder_en/hidden_layers/tanh_layer_0/weights", false)) ||
        (err = expect(g, "BiasAdd", HID "tanh_layer_0/BiasAdd", HID "tanh_layer_0/MatMul",
                      "module/Encoder_en/hidden_layers/tanh_layer_0/bias", NULL)) ||
        (err = expect(g, "Tanh", HID "tanh_layer_0/Tanh", HID "tanh_layer_0/BiasAdd", NULL)) ||
        (err = expect(g, "Square", HID "l2_normalize/Square", HID "tanh_layer_0/Tanh", NULL)) ||
        (err = expect(g, "Sum", HID "l2_normalize/Sum", HID "l2_normalize/Square", ONE, NULL)) ||
        (err = expect_bool(g, HID "l2_normalize/Sum", "keep_dims", true)) ||
        (err = expect(g, "Maximum", HID "l2_normalize/Maximum", HID "l2_normalize/Sum",
                      HID "l2_normalize/Maximum/y", NULL)) ||
        (err = expect(g, "Rsqrt", HID "l2_normalize/Rsqrt", HID "l2_normalize/Maximum", NULL)) ||
        (err = expect(g, "Mul", l2, HID "tanh_layer_0/Tanh", HID "l2_normalize/Rsqrt", NULL)))
        return err;
    if (fed_tfjs_consumers(g, fed_tfjs_node_find(g, l2)) != 0)
        return bad(g, l2, "is read by other nodes; the converter takes it for the output");
    return FED_OK;
}

fed_err fed__use_lite_check_graph(const fed_tfjs *g, bool *used) {
    fed_err err;
    if ((err = constants(g, used)) || (err = inputs(g)) || (err = padding_bias(g))) return err;
    /* Layer 0: attention with a projected residual, then the feed-forward block. */
    if ((err = layer_norm(g, TS "Layer_0/TransformerLayer/layer_prepostprocess/layer_norm/",
                          E "Layer_0/TransformerLayer/layer_prepostprocess/layer_norm/",
                          TS "Layer_0/add")) ||
        (err = adjust_residual(g)) ||
        (err = attention(g, 0, TS "Layer_0/TransformerLayer/layer_prepostprocess/layer_norm/add_1",
                         TS "Layer_0/TransformerLayer/AdjustResidualInput/Scatter/ScatterNd")) ||
        (err = ffn(g, 0, TS "Layer_0/TransformerLayer/layer_postprocess/add")))
        return err;
    /* Layer 1: the same at width 512 with a plain residual. */
    const char *h2 = TS "Layer_0/TransformerLayer/FFN/layer_postprocess/add";
    if ((err = layer_norm(g, TS "Layer_1/TransformerLayer/layer_prepostprocess/layer_norm/",
                          E "Layer_1/TransformerLayer/layer_prepostprocess/layer_norm/", h2)) ||
        (err = attention(g, 1, TS "Layer_1/TransformerLayer/layer_prepostprocess/layer_norm/add_1",
                         h2)) ||
        (err = ffn(g, 1, TS "Layer_1/TransformerLayer/layer_postprocess/add")))
        return err;
    return pooling(g);
}
