/* Optimizer steps against values computed by hand (comments show the arithmetic),
 * clipping, frozen tensors, configuration errors and learning-rate schedules. */
#include "core/arch.h"
#include "core/model.h"
#include "core/optim.h"
#include "tests/test.h"

/* A 3-parameter model: linear 2 -> 1 with bias; params [w0, w1, b]. */
static fed_model *tiny(void) {
    fed_arch *a = NULL;
    fed_model *m = NULL;
    if (fed_arch_parse(&a, "{\"input\":[2],\"layers\":[{\"type\":\"linear\",\"out\":1}]}") ||
        fed_model_new(&m, a))
        m = NULL;
    fed_arch_destroy(&a);
    return m;
}

static void set3(float *p, float a, float b, float c) {
    p[0] = a;
    p[1] = b;
    p[2] = c;
}

/* Runs `steps` updates from w = [1, 2, 3] with gradient g = [0.5, -1, 2] each time. */
static void run(const fed_optim_config *cfg, float lr, int steps, float out[3]) {
    fed_model *m = tiny();
    fed_optim *o = NULL;
    CHECK_OK(fed_optim_new(&o, m, cfg));
    set3(fed_model_params(m), 1, 2, 3);
    for (int s = 0; s < steps && o; s++) {
        set3(fed_model_grads(m), 0.5f, -1, 2);
        fed_optim_step(o, m, lr);
    }
    for (int i = 0; i < 3; i++) out[i] = fed_model_params(m)[i];
    if (o) CHECK_SIZE(fed_optim_steps(o), (size_t)steps);
    fed_optim_destroy(&o);
    fed_model_destroy(&m);
}

#define CHECK3(w, a, b, c)                                                                         \
    do {                                                                                           \
        CHECK_NEAR((w)[0], a, 1e-6);                                                               \
        CHECK_NEAR((w)[1], b, 1e-6);                                                               \
        CHECK_NEAR((w)[2], c, 1e-6);                                                               \
    } while (0)

TEST(sgd_variants) {
    float w[3];
    fed_optim_config c = fed_optim_defaults(FED_OPT_SGD);
    run(&c, 0.1f, 1, w); /* w - 0.1 g */
    CHECK3(w, 0.95, 2.1, 2.8);
    c.momentum = 0.9f; /* buf1 = g, buf2 = 1.9 g: w - 0.1 g - 0.19 g */
    run(&c, 0.1f, 2, w);
    CHECK3(w, 0.855, 2.29, 2.42);
    c.nesterov = true; /* steps use g + 0.9 buf: 1.9 g then 2.71 g */
    run(&c, 0.1f, 2, w);
    CHECK3(w, 0.7695, 2.461, 2.078);
    c = fed_optim_defaults(FED_OPT_SGD);
    c.weight_decay = 0.1f; /* g + 0.1 w = [0.6, -0.8, 2.3] */
    run(&c, 0.1f, 1, w);
    CHECK3(w, 0.94, 2.08, 2.77);
    c.momentum = 0.5f; /* L2: buf2 = 0.5 buf1 + g2 with g2 = g + 0.1 w1 */
    run(&c, 0.1f, 2, w);
    /* w1 = [0.94, 2.08, 2.77]; g2 = [0.594, -0.792, 2.277];
     * buf2 = 0.5 * [0.6, -0.8, 2.3] + g2 = [0.894, -1.192, 3.427] */
    CHECK3(w, 0.8506, 2.1992, 2.4273);
    c.decoupled_wd = true; /* w1 = 0.99 w - 0.1 g; w2 = 0.99 w1 - 0.1 * 1.5 g */
    run(&c, 0.1f, 2, w);
    CHECK3(w, 0.8556, 2.2092, 2.4423);
}

TEST(adam_and_adamw) {
    float w[3];
    fed_optim_config c = fed_optim_defaults(FED_OPT_ADAM);
    /* Bias correction makes the first steps lr * g / |g| = 0.1 * sign(g). */
    run(&c, 0.1f, 1, w);
    CHECK3(w, 0.9, 2.1, 2.9);
    run(&c, 0.1f, 2, w);
    CHECK3(w, 0.8, 2.2, 2.8);

    c = fed_optim_defaults(FED_OPT_ADAMW);
    CHECK_NEAR(c.weight_decay, 0.01, 1e-9);
    /* w * (1 - 0.1 * 0.01) then - 0.1 sign(g) */
    run(&c, 0.1f, 1, w);
    CHECK3(w, 0.899, 2.098, 2.897);

    /* Changing gradients: element 0 sees g1 = 0.5 then g2 = -0.5.
     * m2 = 0.9 * 0.05 - 0.05 = -0.005, v2 = 0.999 * 0.00025 + 0.00025 = 0.00049975,
     * mhat = -0.005 / 0.19, vhat = 0.00049975 / 0.001999 = 0.25,
     * w2 = 0.9 - 0.1 * (-0.0263157895) / 0.5 = 0.905263158 */
    fed_model *m = tiny();
    fed_optim *o = NULL;
    c = fed_optim_defaults(FED_OPT_ADAM);
    CHECK_OK(fed_optim_new(&o, m, &c));
    if (!o) return;
    set3(fed_model_params(m), 1, 2, 3);
    set3(fed_model_grads(m), 0.5f, -1, 2);
    fed_optim_step(o, m, 0.1f);
    set3(fed_model_grads(m), -0.5f, 1, 1);
    double norm = fed_optim_step(o, m, 0.1f);
    CHECK(isnan(norm)); /* no clipping: the norm is not computed */
    CHECK_NEAR(fed_model_params(m)[0], 0.905263158, 1e-6);
    /* Reset forgets the moments: the next step is again 0.1 * sign(g). */
    fed_optim_reset(o);
    float before = fed_model_params(m)[0];
    set3(fed_model_grads(m), 3.0f, 1, 1);
    fed_optim_step(o, m, 0.1f);
    CHECK_NEAR(fed_model_params(m)[0], (double)before - 0.1, 1e-6);
    CHECK_SIZE(fed_optim_state_size(o), 6);
    fed_optim_destroy(&o);
    fed_model_destroy(&m);
}

TEST(clipping_and_frozen) {
    fed_model *m = tiny();
    fed_optim *o = NULL;
    fed_optim_config c = fed_optim_defaults(FED_OPT_SGD);
    c.clip_norm = 1.0f;
    c.weight_decay = 0.5f;
    c.decoupled_wd = true;
    fed_model_set_trainable_glob(m, "0.bias", false);
    CHECK_OK(fed_optim_new(&o, m, &c));
    if (!o) return;
    CHECK_SIZE(fed_optim_state_size(o), 0); /* plain SGD keeps nothing */
    set3(fed_model_params(m), 0, 0, 7);
    set3(fed_model_grads(m), 3, 4, 100); /* the frozen bias gradient is not counted */
    double norm = fed_optim_step(o, m, 1.0f);
    CHECK_NEAR(norm, 5.0, 1e-9);
    CHECK_NEAR(fed_model_params(m)[0], -0.6, 1e-6);
    CHECK_NEAR(fed_model_params(m)[1], -0.8, 1e-6);
    CHECK(fed_model_params(m)[2] == 7.0f); /* frozen: untouched bit-for-bit, no decay */
    /* Below the threshold nothing is scaled. */
    set3(fed_model_grads(m), 0.3f, 0.4f, 0);
    set3(fed_model_params(m), 0, 0, 7);
    norm = fed_optim_step(o, m, 1.0f);
    CHECK_NEAR(norm, 0.5, 1e-7);
    CHECK_NEAR(fed_model_params(m)[0], -0.3, 1e-7);
    fed_optim_destroy(&o);
    fed_model_destroy(&m);
}

TEST(config_errors) {
    fed_model *m = tiny();
    fed_optim *o = NULL;
    fed_optim_config c = fed_optim_defaults(FED_OPT_SGD);
    c.momentum = 1.0f;
    CHECK_ERR(fed_optim_new(&o, m, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "momentum 1: must be in [0, 1)");
    c = fed_optim_defaults(FED_OPT_SGD);
    c.nesterov = true;
    CHECK_ERR(fed_optim_new(&o, m, &c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "nesterov: needs momentum > 0");
    c = fed_optim_defaults(FED_OPT_ADAM);
    c.eps = 0.0f;
    CHECK_ERR(fed_optim_config_check(&c), FED_EINVAL);
    c = fed_optim_defaults(FED_OPT_ADAM);
    c.beta2 = -0.1f;
    CHECK_ERR(fed_optim_config_check(&c), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "beta2 -0.1: must be in [0, 1)");
    c = fed_optim_defaults(FED_OPT_ADAM);
    c.weight_decay = NAN;
    CHECK_ERR(fed_optim_config_check(&c), FED_EINVAL);
    c = fed_optim_defaults(FED_OPT_ADAM);
    c.clip_norm = -1.0f;
    CHECK_ERR(fed_optim_config_check(&c), FED_EINVAL);
    CHECK(o == NULL);

    fed_opt_kind k;
    CHECK_OK(fed_opt_parse("adamw", &k));
    CHECK_INT(k, FED_OPT_ADAMW);
    CHECK_ERR(fed_opt_parse("rmsprop", &k), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "optimizer \"rmsprop\": must be sgd, adam or adamw");
    CHECK_STR(fed_opt_name(FED_OPT_SGD), "sgd");
    fed_model_destroy(&m);
}

TEST(schedules) {
    fed_schedule s = fed_schedule_constant(0.1f);
    CHECK_OK(fed_schedule_check(&s));
    CHECK_NEAR(fed_schedule_lr(&s, 0), 0.1, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 100000), 0.1, 1e-8);
    s.warmup = 4; /* 0.025, 0.05, 0.075, 0.1, then flat */
    CHECK_NEAR(fed_schedule_lr(&s, 0), 0.025, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 2), 0.075, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 3), 0.1, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 9), 0.1, 1e-8);

    s = fed_schedule_constant(0.1f);
    s.kind = FED_SCHED_STEP;
    s.step_size = 10;
    s.gamma = 0.5f;
    CHECK_NEAR(fed_schedule_lr(&s, 9), 0.1, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 10), 0.05, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 25), 0.025, 1e-8);

    s = fed_schedule_constant(0.1f);
    s.kind = FED_SCHED_COSINE;
    s.total = 100;
    s.min_lr = 0.0f;
    CHECK_NEAR(fed_schedule_lr(&s, 0), 0.1, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 50), 0.05, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 25), 0.05 * (1 + sqrt(0.5)), 1e-7);
    CHECK_NEAR(fed_schedule_lr(&s, 100), 0.0, 1e-9);
    CHECK_NEAR(fed_schedule_lr(&s, 500), 0.0, 1e-9);
    s.min_lr = 0.01f;
    s.warmup = 10;
    CHECK_NEAR(fed_schedule_lr(&s, 4), 0.05, 1e-8);
    CHECK_NEAR(fed_schedule_lr(&s, 60), 0.055, 1e-7);

    s.min_lr = 0.2f;
    CHECK_ERR(fed_schedule_check(&s), FED_EINVAL);
    CHECK_STR(fed_errmsg(), "min_lr 0.2: must be in [0, lr]");
    s = fed_schedule_constant(0.0f);
    CHECK_ERR(fed_schedule_check(&s), FED_EINVAL);
    s = fed_schedule_constant(0.1f);
    s.kind = FED_SCHED_STEP;
    s.step_size = 0;
    CHECK_ERR(fed_schedule_check(&s), FED_EINVAL);
    fed_sched_kind k;
    CHECK_OK(fed_sched_parse("cosine", &k));
    CHECK_INT(k, FED_SCHED_COSINE);
    CHECK_ERR(fed_sched_parse("linear", &k), FED_EINVAL);
}

int main(void) {
    RUN(sgd_variants);
    RUN(adam_and_adamw);
    RUN(clipping_and_frozen);
    RUN(config_errors);
    RUN(schedules);
    return test_report();
}
