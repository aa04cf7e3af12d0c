/*
 * Dense double tensors with refcounted storage shared by views.
 *
 * An ms_tensor is a refcounted view (shape, strides, offset) onto a refcounted storage.
 * Ownership: every function that hands out a tensor through an `ms_tensor **out`
 * parameter gives the caller a NEW REFERENCE, to be dropped with ms_tensor_release.
 * Tensor arguments are BORROWED. On failure *out is left NULL and nothing leaks.
 *
 * Views (share storage, so writes through one are seen by the other):
 *   ms_tensor_view, ms_tensor_transpose, ms_tensor_permute, ms_tensor_slice,
 *   ms_tensor_select, ms_tensor_expand, and ms_tensor_reshape when the input is contiguous.
 * Everything else (arithmetic, reductions, linear algebra, ms_tensor_copy,
 * ms_tensor_contiguous when the input is not already contiguous) returns fresh storage.
 *
 * Storage carries a version counter bumped by every in-place write; the autodiff tape
 * uses it to detect tensors modified after being saved.
 *
 * Shapes are int64_t arrays of at most MS_MAXDIM entries; a 0-dimensional tensor
 * is a scalar with one element. Axes are 0-based; negative axes count from the end.
 */
#ifndef METASTEP_TENSOR_H
#define METASTEP_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "metastep/ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_MAXDIM 8

typedef struct ms_tensor ms_tensor;

/* ---- references ---- */
/* Adds a reference and returns t. */
ms_tensor *ms_tensor_retain(ms_tensor *t);
/* Drops a reference (NULL is ignored); the last one frees the view, and storage when unshared. */
void ms_tensor_release(ms_tensor *t);

/* ---- inspection (borrow t; never fail) ---- */
int ms_tensor_ndim(const ms_tensor *t);
/* Size along axis (0 <= axis < ndim). */
int64_t ms_tensor_dim(const ms_tensor *t, int axis);
/* Pointer to the shape array (ndim entries), valid while t lives. */
const int64_t *ms_tensor_shape(const ms_tensor *t);
const int64_t *ms_tensor_strides(const ms_tensor *t);
int64_t ms_tensor_numel(const ms_tensor *t);
int ms_tensor_is_contiguous(const ms_tensor *t);
/* The context t was made in. */
ms_ctx *ms_tensor_ctx(const ms_tensor *t);
/* Pointer to element 0 of the view (strided access through ms_tensor_strides). */
double *ms_tensor_data(const ms_tensor *t);
/* Version stamp of the underlying storage. */
uint64_t ms_tensor_version(const ms_tensor *t);
/* Nonzero if a and b share storage. */
int ms_tensor_shares_storage(const ms_tensor *a, const ms_tensor *b);
/* Writes "[3, 4]" (or "[]" for a scalar) into buf; returns buf. */
char *ms_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);
#define MS_SHAPE_STRLEN (MS_MAXDIM * 22 + 4)

/* ---- construction (new references) ---- */
/* Uninitialized contents. */
int ms_tensor_empty(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out);
int ms_tensor_zeros(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out);
int ms_tensor_ones(ms_ctx *ctx, int ndim, const int64_t *shape, ms_tensor **out);
int ms_tensor_full(ms_ctx *ctx, int ndim, const int64_t *shape, double value, ms_tensor **out);
/* 0-dimensional tensor holding value. */
int ms_tensor_scalar(ms_ctx *ctx, double value, ms_tensor **out);
/* Copies numel(shape) doubles from data (row-major). */
int ms_tensor_from_data(ms_ctx *ctx, int ndim, const int64_t *shape, const double *data,
                        ms_tensor **out);
/*
 * A contiguous row-major tensor over the host's memory: numel(shape) doubles at data, not
 * copied and not owned. The host keeps data alive and in place until every reference (and
 * every view) is released. Writes through the engine's in-place operations (ms_tensor_copy_,
 * ms_tensor_fill_, ms_tensor_set) land in data. A host that writes data itself while the
 * tensor is saved on a tape calls ms_tensor_touch, as the engine's in-place writes do.
 */
int ms_tensor_wrap(ms_ctx *ctx, double *data, int ndim, const int64_t *shape, ms_tensor **out);
/* Bumps t's storage version after the host wrote into wrapped memory. */
void ms_tensor_touch(ms_tensor *t);
/* n x m identity (m < 0 means m = n). */
int ms_tensor_eye(ms_ctx *ctx, int64_t n, int64_t m, ms_tensor **out);
/* Vector -> square diagonal matrix; matrix -> vector of its main diagonal (copy). */
int ms_tensor_diag(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
/* start, start+step, ... up to but excluding stop (step != 0, finite). */
int ms_tensor_arange(ms_ctx *ctx, double start, double stop, double step, ms_tensor **out);
/* n points evenly spaced from a to b inclusive (n >= 1). */
int ms_tensor_linspace(ms_ctx *ctx, double a, double b, int64_t n, ms_tensor **out);
/* Uniform in [lo, hi) / normal(mean, std) drawn from rng (NULL = the context's generator). */
int ms_tensor_rand(ms_ctx *ctx, ms_rng *rng, int ndim, const int64_t *shape, double lo, double hi,
                   ms_tensor **out);
int ms_tensor_randn(ms_ctx *ctx, ms_rng *rng, int ndim, const int64_t *shape, double mean,
                    double std, ms_tensor **out);

/* ---- copies and views (new references) ---- */
/* Always fresh, contiguous storage. */
int ms_tensor_copy(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
/* t itself (retained) if contiguous, else a contiguous copy. */
int ms_tensor_contiguous(ms_ctx *ctx, const ms_tensor *t, ms_tensor **out);
/* View with a new shape; t must be contiguous (MS_ESTATE otherwise). One entry may be -1. */
int ms_tensor_view(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                   ms_tensor **out);
/* Like view when t is contiguous, else a reshaped copy. */
int ms_tensor_reshape(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                      ms_tensor **out);
/* Swaps two axes (view). */
int ms_tensor_transpose(ms_ctx *ctx, const ms_tensor *t, int axis0, int axis1, ms_tensor **out);
/* Reorders axes: out axis i is t's axis perm[i] (view). */
int ms_tensor_permute(ms_ctx *ctx, const ms_tensor *t, const int *perm, ms_tensor **out);
/* Elements start, start+step, ... < stop along axis (view; step >= 1; 0 <= start <= stop <= dim).
 */
int ms_tensor_slice(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t start, int64_t stop,
                    int64_t step, ms_tensor **out);
/* Index along axis, dropping that axis (view). */
int ms_tensor_select(ms_ctx *ctx, const ms_tensor *t, int axis, int64_t index, ms_tensor **out);
/* Broadcast view to shape (stride 0 on expanded axes). When it repeats elements, it and every
 * view of it are read-only: ms_tensor_set, _fill_ and _copy_ refuse them with MS_ESTATE. */
int ms_tensor_expand(ms_ctx *ctx, const ms_tensor *t, int ndim, const int64_t *shape,
                     ms_tensor **out);
/* Concatenates n tensors along axis (fresh storage). */
int ms_tensor_cat(ms_ctx *ctx, int n, ms_tensor *const *ts, int axis, ms_tensor **out);

/* ---- element access ---- */
/* Reads the element at a full multi-index (ndim entries, 0-based). */
int ms_tensor_get(ms_ctx *ctx, const ms_tensor *t, const int64_t *index, double *value);
/* Writes one element in place (bumps the version). MS_ESTATE for a read-only expanded view. */
int ms_tensor_set(ms_ctx *ctx, ms_tensor *t, const int64_t *index, double value);
/* The single element of a one-element tensor. */
int ms_tensor_item(ms_ctx *ctx, const ms_tensor *t, double *value);
/* Copies the elements in row-major order into buf (numel entries). */
int ms_tensor_read(ms_ctx *ctx, const ms_tensor *t, double *buf, int64_t n);
/* In place: fill with value / copy src (broadcast to dst's shape) into dst. Bump the version. */
int ms_tensor_fill_(ms_ctx *ctx, ms_tensor *t, double value);
int ms_tensor_copy_(ms_ctx *ctx, ms_tensor *dst, const ms_tensor *src);

/*
 * Formats t like a NumPy array, eliding the middle of long axes ("...") once numel
 * exceeds threshold (<= 0: default 1000), keeping edge items per end (<= 0: default 3).
 * *out is a new NUL-terminated string from the context's allocator, released with
 * ms_string_free(ctx, *out).
 */
int ms_tensor_format(ms_ctx *ctx, const ms_tensor *t, int64_t threshold, int edge, char **out);
void ms_string_free(ms_ctx *ctx, char *s);

#ifdef __cplusplus
}
#endif
#endif
