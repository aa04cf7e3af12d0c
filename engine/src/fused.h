/*
 * Fused matrix kernels for the unrolls of linear dynamics (stable.c, the forward fast path in
 * forward_fast.c): a state and its tangents are k vectors multiplied by the SAME matrix every
 * step, so one pass over the matrix serves all of them. A matrix of d = 4000 is 128 MB: the
 * unroll is bound by the bytes of the matrix read per step, not by the flops. (BLAS-3 dgemm
 * with k = 2 columns copies the matrix into packed panels on every call and runs 6-8 times
 * slower than one dgemv on this kind of machine; k dgemv calls read the matrix k times.)
 *
 * Every kernel reads each element of its matrix once per call, holds the k vectors in
 * registers for blocks of rows, and leaves its inputs unchanged unless named as output.
 * 1 <= k <= MS_FUSED_MAXK. Row-major matrices with a leading dimension (ld >= columns);
 * vector r of a block of k vectors starts at base + r * ld.
 */
#ifndef METASTEP_FUSED_H
#define METASTEP_FUSED_H

#include <stdint.h>

#define MS_FUSED_MAXK 4

/* The unrolls use ms__fused_hmul_upper for an exactly symmetric H from this size on: below it
 * H stays in L1/L2, the bytes do not bound the time, and the full kernel (half the flops, no
 * stores into y) is faster (measured: 1.8x vs 2.3x the dgemv floor at d = 100; 1.3x vs 0.8x
 * at d = 1000). */
#define MS_FUSED_SYM_MIN_DIM 256

/* Y[r] = A X[r] for r < k, A [m,n] read in full (a square H symmetric or not). Y ([m] rows)
 * must not overlap X. */
void ms__fused_gemv(int k, int64_t m, int64_t n, const double *A, int64_t lda, const double *X,
                    int64_t ldx, double *Y, int64_t ldy);

/* Y[r] = H X[r] for a symmetric H [n,n] of which only the upper triangle (j >= i) is read:
 * half the bytes of ms__fused_gemv. Y must not overlap X. */
void ms__fused_hmul_upper(int k, int64_t n, const double *H, int64_t ldh, const double *X,
                          int64_t ldx, double *Y, int64_t ldy);

/*
 * Least squares in one pass over A [m,n]: R[r] += a A S[r] ([m], in place), then
 * G[r] = alpha A^T R[r] ([n], with the updated R). Each row of A is read once for both.
 * S == NULL: R is left as it is; G == NULL: no G. G must not overlap R or S.
 */
void ms__fused_ls(int k, int64_t m, int64_t n, const double *A, int64_t lda, double a,
                  const double *S, int64_t lds, double *R, int64_t ldr, double alpha, double *G,
                  int64_t ldg);

/* Whether the n x n matrix H (leading dimension ldh) equals its transpose exactly. */
int ms__fused_is_symmetric(int64_t n, const double *H, int64_t ldh);

#endif
