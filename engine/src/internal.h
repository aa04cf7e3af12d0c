/* Engine-internal definitions shared by the engine sources. Not installed. */
#ifndef METASTEP_INTERNAL_H
#define METASTEP_INTERNAL_H

#include <signal.h>

#include "metastep/metastep.h"

typedef struct ms_level ms_level;

struct ms_ctx {
  ms_alloc_fn alloc;
  void *ud;
  size_t bytes; /* live bytes allocated through the context */
  size_t limit; /* 0 = unlimited */
  size_t peak;  /* largest `bytes` since the last ms_ctx_reset_peak */
  ms_rng rng;
  int status;
  volatile sig_atomic_t interrupted;
  /* ms_ctx_set_poll: asked by ms_ctx_check_interrupt whether to stop (host budgets) */
  int (*poll)(void *ud);
  void *poll_ud;
  /* ms_ctx_set_check_numerics: every primitive's output checked */
  int check_numerics;
  void *host; /* ms_ctx_userdata */
  char err[512];
  /* autodiff: the stack of active levels, innermost last */
  ms_level *levels[8];
  int nlevels;
  uint64_t next_level_id;
  /* linear algebra (linalg.c): products made, and the BLAS thread setting (ms_ctx_set_threads;
   * threads_env: OPENBLAS_NUM_THREADS or OMP_NUM_THREADS was set when the context was made) */
  uint64_t products;
  int threads, threads_env;
};

typedef struct ms_storage {
  ms_ctx *ctx;
  int refcount;
  uint64_t version;
  int64_t n; /* number of doubles */
  double *data;
  int external; /* data is the host's (ms_tensor_wrap): not freed with the storage */
} ms_storage;

struct ms_tensor {
  ms_ctx *ctx;
  int refcount;
  ms_storage *st;
  int64_t offset; /* in elements */
  int ndim;
  int64_t numel;
  int64_t shape[MS_MAXDIM];
  int64_t strides[MS_MAXDIM]; /* in elements; may be 0 (expanded) */
  int readonly; /* an expand that repeats elements, or a view of one: in-place writes refuse it */
  /* autodiff: one entry per level this tensor is tracked on (see ad.c) */
  int ntrack;
  struct ms_track {
    uint64_t level;     /* level id */
    int64_t node;       /* node index on a reverse tape */
    ms_tensor *tangent; /* tangent on a forward level (owned) */
  } track[8];
};

/* Grows a block from ms_ctx_alloc (osize bytes) to nsize through the context's allocator
 * (a realloc: large blocks move without a copy); NULL and the old block kept on failure. */
void *ms__ctx_realloc(ms_ctx *ctx, void *ptr, size_t osize, size_t nsize);
/* New tensor with fresh contiguous storage of the given shape (contents uninitialized). */
int ms__tensor_alloc(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out);
/* New view sharing t's storage with the given geometry. */
int ms__tensor_view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                    const int64_t *strides, int64_t offset, ms_tensor **out);
/* A fresh contiguous copy of t's values that no autodiff level tracks (for state kept
 * outside the tape: meta-training's theta, archive entries). */
int ms__tensor_plain_copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
/* Bumps the storage version after an in-place write. */
void ms__tensor_touch(ms_tensor *t);
/* The one check of shape arithmetic (tensor.c): ndim in range, sizes >= 0, and the product of
 * the nonzero sizes at most 2^50, so numel, strides and offsets cannot overflow however many
 * sizes are 0. *numel (if not NULL) gets the element count. Message names `what`. */
int ms__shape_numel(ms_ctx *ctx, const char *what, int ndim, const int64_t *shape, int64_t *numel);
/* Fails with MS_EARG unless the square matrix a is symmetric within 1e-10 * max|a| (linalg.c);
 * the message names `what`, the argument `arg`, the largest asymmetry and its position. */
int ms__check_symmetric(ms_ctx *ctx, const char *what, const char *arg, const ms_tensor *a);
/* Normalizes a possibly negative axis for an ndim-dimensional tensor; message names `what`. */
int ms__axis(ms_ctx *ctx, const char *what, int axis, int ndim, int *out);
/* Row-major strided iteration helper: offset of the element at flat row-major index i. */
int64_t ms__offset_of(const ms_tensor *t, int64_t i);

/* ---- autodiff tracking (ad.c): the entries in ms_tensor.track and ms_ctx.levels ---- */
/* Nonzero if any of the tensors is tracked on an active level. */
int ms__any_tracked(ms_ctx *ctx, int n, const ms_tensor *const *ts);
/* Fails with MS_EARG if t is tracked on an active level: for the public operations that are
 * not differentiable (linalg.c's factorizations, tensor.c's in-place copy). */
int ms__not_differentiable(ms_ctx *ctx, const char *what, int n, const ms_tensor *const *ts);
/* Releases a tensor's tracking entries (its tangents). Called by ms_tensor_release. */
void ms__track_clear(ms_tensor *t);

/* Element-wise iteration over a (possibly strided) tensor in row-major order. */
#define MS_TENSOR_DATA(t) ((t)->st->data + (t)->offset)

#endif
