/* The coordinator's checkpoint files (checkpoint.c), independent of the round engine:
 * after every round <dir>/round-NNNNNN.safetensors (the global model, metadata
 * fedtune.round, fedtune.model_version, fedtune.strategy, fedtune.sampling_seed,
 * fedtune.sha256 of the flat parameter bytes) and, for strategies with state,
 * <dir>/round-NNNNNN.strategy.safetensors (its buffers, digest in the model file), both
 * written atomically and the directory fsynced; the newest `keep` rounds are kept. */
#ifndef FED_COORDINATOR_CHECKPOINT_H
#define FED_COORDINATOR_CHECKPOINT_H

#include "coordinator/aggregate.h"
#include "core/model.h"
#include "core/safetensors.h"

#include <stddef.h>
#include <stdint.h>

/* Writes round r of the global model m (its trainable flags included) and the strategy
 * state into dir as described above, fsyncs dir and deletes checkpoints older than the
 * newest `keep`. extra (may be NULL): more metadata pairs for the model file (the DP
 * accountant's state). */
fed_err fed_ckpt_write(const char *dir, uint64_t round, uint64_t model_version, const fed_model *m,
                       const fed_strategy *s, uint64_t sampling_seed, size_t keep,
                       const fed_meta *extra) FED_MUST_USE;
/* Loads the newest checkpoint of dir whose digests verify into m (same architecture)
 * and s, falling back to older ones (one warn line per skipped file). *round is 0 (and
 * nothing changes) when dir has no valid checkpoint. *meta (meta may be NULL) receives a
 * copy of the loaded model file's metadata (NULL when nothing was loaded). */
fed_err fed_ckpt_resume(const char *dir, fed_model *m, fed_strategy *s, uint64_t *round,
                        uint64_t *model_version, fed_meta **meta) FED_MUST_USE;
/* Removes the temporary files a crash in the middle of fed_ckpt_write left in dir (only
 * names of its own pattern, round-NNNNNN[.strategy].safetensors.tmp.XXXXXX; one warn
 * line), *removed of them. A missing dir is no error. fed_coord_new calls it before
 * resuming, so repeated crashes cannot fill the disk: the folder needs room for
 * ckpt.keep + 1 rounds of files (the newest is written before the oldest goes). */
fed_err fed_ckpt_sweep(const char *dir, size_t *removed) FED_MUST_USE;
/* The path of round r's model file in dir (buf of len bytes). */
void fed_ckpt_path(char *buf, size_t len, const char *dir, uint64_t round);

#endif
