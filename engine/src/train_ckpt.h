/* Meta-training checkpoints (train.h's checkpoint / resume options): the contract between
 * train.c and train_ckpt.c. Not installed. */
#ifndef METASTEP_TRAIN_CKPT_H
#define METASTEP_TRAIN_CKPT_H

#include "internal.h"

/* The parts of a run a checkpoint holds, as pointers into train.c's run. */
typedef struct ms__train_state {
  const ms_optim *opt;
  int np;
  ms_tensor **cur; /* np current stored values (owned by the run) */
  double *m, *v;   /* the meta-optimizer's moments, nmom entries each */
  int64_t nmom;
  int64_t *updates;        /* updates made (Adam's bias correction) */
  ms_train_result *result; /* history, n and the best so far */
} ms__train_state;

/* Saves the run after iteration k to o->checkpoint (atomically). */
int ms__train_checkpoint(ms_ctx *ctx, const ms_train_options *o, const ms__train_state *s,
                         int64_t k);
/* Restores the run from o->resume into s (cur, moments, updates, result) and the context's
 * generator, and sets *k to the iteration the checkpoint was made at. Everything is
 * validated first: on failure nothing has changed. s->result must be empty (fresh). */
int ms__train_resume(ms_ctx *ctx, const ms_train_options *o, ms__train_state *s, int64_t *k);
/* train.c's history append (moves rec's references; rec untouched on failure). */
int ms__train_hist_push(ms_ctx *ctx, ms_train_result *res, int64_t count, ms_train_record *rec);

#endif
