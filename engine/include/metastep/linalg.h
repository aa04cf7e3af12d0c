/*
 * Linear algebra through CBLAS and LAPACKE. Results are fresh tensors (new references),
 * inputs are borrowed; strided inputs are copied to contiguous row-major first.
 * LAPACK's info is always checked: a singular or non-positive-definite matrix is
 * MS_ENUMERIC with a message naming the routine and the failing index.
 */
#ifndef METASTEP_LINALG_H
#define METASTEP_LINALG_H

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Inner product of two vectors of equal length -> 0-d tensor. */
int ms_dot(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
/* [m,n] x [n] -> [m]. */
int ms_matvec(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *x, ms_tensor **out);
/*
 * NumPy matmul for 1-D and 2-D operands: [m,k]x[k,n] -> [m,n]; [m,k]x[k] -> [m];
 * [k]x[k,n] -> [n]; [k]x[k] -> 0-d. More than 2 dimensions is MS_ESHAPE.
 */
int ms_matmul(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);
/* Outer product of two vectors: [m] x [n] -> [m,n]. */
int ms_outer(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **out);

/* Symmetric eigendecomposition of a [n,n] matrix (MS_EARG, naming the largest |a - a^T|, unless
 * symmetric within 1e-10 * max|a|): eigenvalues
 * ascending in *w ([n]) and orthonormal eigenvectors as the columns of *v ([n,n]). */
int ms_eigh(ms_ctx *ctx, const ms_tensor *a, ms_tensor **w, ms_tensor **v);
/* Solves a x = b for square a ([n,n]); b is [n] or [n,k]; x has b's shape. */
int ms_solve(ms_ctx *ctx, const ms_tensor *a, const ms_tensor *b, ms_tensor **x);
/* Lower-triangular L with a = L L^T for symmetric positive definite a (symmetry checked as
 * for ms_eigh). */
int ms_cholesky(ms_ctx *ctx, const ms_tensor *a, ms_tensor **l);
/* Reduced QR of [m,n]: q [m,k], r [k,n], k = min(m,n). */
int ms_qr(ms_ctx *ctx, const ms_tensor *a, ms_tensor **q, ms_tensor **r);
/* Inverse of a square matrix. */
int ms_inv(ms_ctx *ctx, const ms_tensor *a, ms_tensor **out);
/* Determinant of a square matrix (0-d tensor). */
int ms_det(ms_ctx *ctx, const ms_tensor *a, ms_tensor **out);

/* The OpenBLAS threads a product of `work` multiply-adds gets under ctx's setting
 * (ms_ctx_set_threads): the fixed count, OpenBLAS's own when the environment set it, else one
 * below a measured size (see linalg.c, and the README's "Benchmarks") and all cores above. */
int ms_linalg_threads(const ms_ctx *ctx, int64_t work);

#ifdef __cplusplus
}
#endif
#endif
