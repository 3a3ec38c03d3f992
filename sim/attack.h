/* The data poisoning of `fedtune sim`'s malicious sites (sim/sim.h "Attacks"): the
 * backdoor's trigger, the poisoned training share of a backdoor site, and the triggered
 * test set whose accuracy is the attack's success rate. The label flip (y -> C-1-y) is
 * one line in sim.c; model poisoning is the sites' "attack" stage (client/). What
 * deliberately does not live here: who attacks (fed_sim_malicious) and running the
 * federation.
 *
 * The trigger is a fixed pattern on a few input features, set on the values as the sites
 * train on them (after the model's own standardisation, which the simulator applies
 * when it loads the data, before any --input-stats transform, which is why the
 * simulator refuses the two together):
 *   - images (the data's shape is (C, H, W), H and W >= 3): the 3x3 pixels of the
 *     bottom-right corner of every channel set to the largest value of the pooled
 *     training data (over all features: pixels share one scale);
 *   - any other data (a table of features): the last 3 features (all, when fewer) each
 *     set to its column's maximum plus its range (max - min; 1 when the column is
 *     constant) over the pooled training data: a value no training example has. */
#ifndef FED_SIM_ATTACK_H
#define FED_SIM_ATTACK_H

#include "core/err.h"
#include "dataset/dataset.h"

#include <stddef.h>
#include <stdint.h>

#define FED_SIM_TRIGGER_MAX 144 /* features a trigger may set: 9 pixels of 16 channels */

/* The share of a backdoor site's examples copied with the trigger, relabelled. */
#define FED_SIM_BACKDOOR_SHARE 0.5

/* A backdoor trigger: which features of an example it sets, and to what. */
typedef struct fed_sim_trigger {
    size_t n;                         /* features set, 1..FED_SIM_TRIGGER_MAX */
    size_t at[FED_SIM_TRIGGER_MAX];   /* their indices in an example, ascending */
    float value[FED_SIM_TRIGGER_MAX]; /* the values they are set to */
} fed_sim_trigger;

/* The trigger for data like train (its shape and its values, as above). FED_EINVAL for
 * no examples, or an image of more than 16 channels. */
fed_err fed_sim_trigger_make(fed_sim_trigger *t, const fed_dataset *train) FED_MUST_USE;

/* Sets the trigger's features of one example x (the data's dim floats). */
void fed_sim_trigger_apply(const fed_sim_trigger *t, float *x);

/* *out = d followed by triggered copies, relabelled `label`, of round(FED_SIM_BACKDOOR_SHARE
 * x n) of its examples, the ones a shuffle under seed puts first, in that order. FED_EINVAL
 * for a label not below d's classes. */
fed_err fed_sim_backdoor_poison(fed_dataset **out, const fed_dataset *d, const fed_sim_trigger *t,
                                int32_t label, uint64_t seed) FED_MUST_USE;

/* *out = the examples of test whose label is not `label`, triggered and relabelled
 * `label`, in order: a model's accuracy on it is the backdoor's success rate. FED_EINVAL
 * for a label not below test's classes or no example of another label. */
fed_err fed_sim_backdoor_testset(fed_dataset **out, const fed_dataset *test,
                                 const fed_sim_trigger *t, int32_t label) FED_MUST_USE;

#endif
