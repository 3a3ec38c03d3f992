/* The "delta" stage: a round's update is what training changed, local - global over the
 * model's trainable tensors in manifest order (fed_model_delta: one walk over the
 * trainable ranges, frozen tensors never leave the site). Runs on the thread that
 * trained, which holds the trained model. */
#include "client/site_pipeline.h"

#include "core/alloc.h"

static fed_err delta_apply(site_stage *s, site_update *u) {
    (void)s;
    if (!fed_model_delta(u->model, fed_model_params_const(u->model), u->global, u->v))
        return fed_errorf(FED_ENONFINITE, "the local update is not finite");
    return FED_OK;
}

static const site_stage_type delta_type = {"delta", SITE_STAGE_TRAINED, delta_apply, NULL};

fed_err site_stage_delta_new(site_stage **chain) {
    site_stage *s = fed_calloc(1, sizeof *s);
    if (!s) return FED_ENOMEM;
    s->type = &delta_type;
    site_stage_append(chain, s);
    return FED_OK;
}
