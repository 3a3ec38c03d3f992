/* The "downlink" stage (--compress-down): the server's step, committed compressed. After
 * the strategy has moved the trainable weights from w (the version sites hold) to w', the
 * change w' - w is encoded with a dense codec (core/codec.h), decoded again, and the new
 * version becomes w + decode(stream) exactly: what a site holding w rebuilds, bit for bit,
 * by the same decode and the same float additions, and checks against the manifest's
 * SHA-256. The stream is published for the round's RoundStart (fed_coord_down), so a site
 * with the capability "delta-down" that holds w receives it instead of the weights. The
 * server's step is then quantized (unbiased for q8 and q4): the price of the smaller
 * downlink, measured in examples/compression. */
#include "coordinator/internal.h"
#include "net/channel.h"

typedef struct down_stage {
    fed_stage base;
    fed_model *model;        /* borrowed: the global model the strategy stepped */
    fed_msg_manifest mf;     /* its tensors (borrowed): which are trainable, in order */
    fed_codec codec;         /* dense: fp16, bf16, q8, q4 */
    const uint64_t *version; /* borrowed: the version before this close */
    fed_coord_down *out;     /* borrowed: where the stream is published */
    size_t n;                /* trainable floats */
    float *prev;             /* (n) the trainable weights of the version sites hold */
    float *work;             /* (n) */
    uint8_t *bytes;          /* the stream (fed_codec_size(codec, n) bytes) */
} down_stage;

static fed_err down_close(fed_stage *s, fed_round_agg *r) {
    down_stage *d = (down_stage *)s;
    size_t len = fed_codec_size(&d->codec, d->n);
    uint64_t from = *d->version, to = from + 1;
    float *w = fed_model_params(d->model);
    fed_manifest_gather(&d->mf, true, w, d->work);
    for (size_t i = 0; i < d->n; i++) d->work[i] -= d->prev[i];
    fed_err err = fed_codec_encode(&d->codec, d->work, d->n, fed_mix64(to ^ 0x646f776eu), d->bytes,
                                   len, NULL);
    if (!err) err = fed_codec_decode(d->bytes, len, d->work, d->n, NULL);
    if (err) { /* a change the codec cannot hold (fp16 past 65504): this version goes whole */
        FED_LOG(FED_LOG_WARN, "round %" PRIu64 ": downlink %s: %s; sending whole models", r->round,
                d->out->name, fed_errmsg());
        fed_manifest_gather(&d->mf, true, w, d->prev);
        d->out->len = 0;
        return FED_OK;
    }
    for (size_t i = 0; i < d->n; i++) d->prev[i] += d->work[i]; /* the site's very sums */
    fed_manifest_scatter(&d->mf, true, d->prev, w);
    d->out->bytes = d->bytes;
    d->out->len = len;
    d->out->from = from;
    d->out->to = to;
    fed_sha256(d->bytes, len, d->out->sha);
    return FED_OK;
}

static void down_destroy(fed_stage *s) {
    down_stage *d = (down_stage *)s;
    fed_free(d->prev);
    fed_free(d->work);
    fed_free(d->bytes);
    d->out->len = 0;
}

static const fed_stage_type down_type = {
    .name = "downlink", .close = down_close, .destroy = down_destroy};

fed_err fed_stage_downlink_new(fed_stage **chain, fed_model *model, const fed_msg_manifest *mf,
                               const fed_codec *codec, const uint64_t *version,
                               fed_coord_down *out) {
    if (codec->id == FED_CODEC_F32 || codec->id == FED_CODEC_TOPK)
        return fed_errorf(FED_EINVAL, "downlink: only a dense codec (fp16, bf16, q8, q4)");
    down_stage *d = fed_calloc(1, sizeof *d);
    if (!d) return FED_ENOMEM;
    d->model = model;
    d->mf = *mf;
    d->codec = *codec;
    d->version = version;
    d->out = out;
    d->n = fed_model_num_trainable(model);
    d->prev = fed_mallocarray(d->n, sizeof *d->prev);
    d->work = fed_mallocarray(d->n, sizeof *d->work);
    d->bytes = fed_malloc(fed_codec_size(codec, d->n));
    if (!d->prev || !d->work || !d->bytes) {
        down_destroy(&d->base);
        fed_free(d);
        return FED_ENOMEM;
    }
    fed_manifest_gather(mf, true, fed_model_params(model), d->prev);
    out->len = 0;
    d->base.type = &down_type;
    fed_stage_append(chain, &d->base);
    return FED_OK;
}

/* After the strategy, when the configuration asks for a compressed downlink. */
fed_err fed__coord_stage_downlink(fed_stage **chain, fed_coord *c) {
    if (!fed_codec_on(&c->down.codec)) return FED_OK;
    fed_msg_manifest mf = {.tensors = c->tensors, .num_tensors = c->ntensors};
    return fed_stage_downlink_new(chain, c->model, &mf, &c->down.codec, &c->version, &c->down);
}
