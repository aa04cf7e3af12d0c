/*
 * Fused matrix kernels (fused.h).
 *
 * Written with GCC/Clang vector extensions (8 doubles, one AVX-512 register, two AVX2 ones,
 * four SSE2 ones) so one source serves every x86-64 level; with GCC on x86-64 Linux each
 * kernel is compiled three times (x86-64-v4, v3 and baseline) and the loader picks the one
 * the CPU runs (target_clones, an ifunc). The engine is built as ISO C11, where GCC does not
 * contract a * b + c into a fused multiply-add: the pragma below allows it here, so the
 * kernels use FMA where the clone's ISA has it (the results differ from the unfused ones by
 * rounding only; nothing in the unrolls depends on a particular rounding of H x).
 *
 * Blocking: rows of the matrix are taken four at a time; for each block the k vectors are
 * streamed once through registers (k <= 4 vectors of d doubles stay in L1/L2 for d <= 1500
 * and in L2 beyond), so the matrix, the only operand too large for the caches, is read
 * exactly once, in order, which is what the hardware prefetchers stream best.
 */
#include "fused.h"

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
/* O3: the loops over the k vectors and the rows of a block unroll completely, so the
 * accumulator arrays live in registers (at O2 they stay in memory, 4-6x slower) */
#pragma GCC optimize("O3", "fp-contract=fast")
/* the vector helpers are always inlined static functions: no ABI is crossed */
#pragma GCC diagnostic ignored "-Wpsabi"
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_ADDRESS__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define INLINE static inline __attribute__((always_inline))
#define VW 8    /* doubles per vector */
#define RB 4    /* rows per block */
#define RBMAX 8 /* rows per block of the dense kernel for k <= 2 */

typedef double vd __attribute__((vector_size(VW * sizeof(double))));
/* the same type at 8-byte alignment: loads and stores at any double's address */
typedef double vdu __attribute__((vector_size(VW * sizeof(double)), aligned(8), may_alias));

INLINE vd vload(const double *p) { return *(const vdu *)p; }
INLINE void vstore(double *p, vd v) { *(vdu *)p = v; }
INLINE vd vbroadcast(double x) { return (vd){x, x, x, x, x, x, x, x}; }
INLINE double hsum(vd v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* Asks for the cache line PF doubles ahead in each row of a block (clamped to the row): with
 * several rows streamed at once the hardware prefetchers alone fall behind DRAM (measured at
 * d = 4000: the upper kernel at 0.63-0.77x the dgemv floor without, 0.48-0.56x with). */
#define PF 256
INLINE void prefetch_rows(const double *h, int64_t ldh, int nr, int64_t j, int64_t n) {
  int64_t at = j + PF < n ? j + PF : n - 1;
  for (int a = 0; a < nr; a++) __builtin_prefetch(h + a * ldh + at);
}

/* ---- dense A X ---- */

/* Y[r][a] = h[a] . X[r] for the nr rows h[a] = h + a ldh of one block (nr <= RBMAX); k and
 * nr are constants once inlined, so the accumulators live in registers. */
INLINE void dense_block(int k, int nr, int64_t n, const double *h, int64_t ldh, const double *X,
                        int64_t ldx, double *Y, int64_t ldy) {
  vd acc[RBMAX][MS_FUSED_MAXK];
  for (int a = 0; a < nr; a++)
    for (int r = 0; r < k; r++) acc[a][r] = vbroadcast(0.0);
  int64_t j = 0;
  for (; j + VW <= n; j += VW) {
    vd hv[RBMAX];
    prefetch_rows(h, ldh, nr, j, n);
    for (int a = 0; a < nr; a++) hv[a] = vload(h + a * ldh + j);
    for (int r = 0; r < k; r++) {
      vd xv = vload(X + r * ldx + j);
      for (int a = 0; a < nr; a++) acc[a][r] += hv[a] * xv;
    }
  }
  for (int a = 0; a < nr; a++)
    for (int r = 0; r < k; r++) {
      double s = hsum(acc[a][r]);
      for (int64_t l = j; l < n; l++) s += h[a * ldh + l] * X[r * ldx + l];
      Y[r * ldy + a] = s;
    }
}

/* Blocks of 8 rows for k <= 2 (16 accumulators, 8 loads of H per 2 of X), 4 beyond (the
 * accumulators must fit the 32 AVX-512 registers). */
INLINE void dense_k(int k, int64_t m, int64_t n, const double *A, int64_t lda, const double *X,
                    int64_t ldx, double *Y, int64_t ldy) {
  int64_t i = 0;
  if (k <= 2)
    for (; i + RBMAX <= m; i += RBMAX)
      dense_block(k, RBMAX, n, A + i * lda, lda, X, ldx, Y + i, ldy);
  for (; i + RB <= m; i += RB) dense_block(k, RB, n, A + i * lda, lda, X, ldx, Y + i, ldy);
  for (; i < m; i++) dense_block(k, 1, n, A + i * lda, lda, X, ldx, Y + i, ldy);
}

CLONES void ms__fused_gemv(int k, int64_t m, int64_t n, const double *A, int64_t lda,
                           const double *X, int64_t ldx, double *Y, int64_t ldy) {
  switch (k) {
    case 1:
      dense_k(1, m, n, A, lda, X, ldx, Y, ldy);
      break;
    case 2:
      dense_k(2, m, n, A, lda, X, ldx, Y, ldy);
      break;
    case 3:
      dense_k(3, m, n, A, lda, X, ldx, Y, ldy);
      break;
    default:
      dense_k(4, m, n, A, lda, X, ldx, Y, ldy);
      break;
  }
}

/* ---- symmetric H X from the upper triangle ---- */

/*
 * Rows i0 .. i0 + nr - 1 (nr == RB or 1) of the upper triangle: each element H[i][j] (j > i)
 * serves twice, as H[i][j] in y_i += H[i][j] x_j (a dot product per row, accumulated in
 * registers) and as H[j][i] in y_j += H[i][j] x_i (an axpy into y's tail). Y holds the
 * partial sums of the rows above.
 */
INLINE void upper_block(int k, int nr, int64_t n, int64_t i0, const double *H, int64_t ldh,
                        const double *X, int64_t ldx, double *Y, int64_t ldy) {
  const double *h = H + i0 * ldh;
  double dot[RB][MS_FUSED_MAXK];
  /* the diagonal block, upper part, in scalars */
  for (int a = 0; a < nr; a++)
    for (int r = 0; r < k; r++) {
      const double *x = X + r * ldx;
      double s = 0;
      for (int b = a; b < nr; b++) {
        double hab = h[a * ldh + i0 + b];
        s += hab * x[i0 + b];
        if (b > a) Y[r * ldy + i0 + b] += hab * x[i0 + a];
      }
      dot[a][r] = s;
    }
  vd acc[RB][MS_FUSED_MAXK], xb[RB][MS_FUSED_MAXK];
  for (int a = 0; a < nr; a++)
    for (int r = 0; r < k; r++) {
      acc[a][r] = vbroadcast(0.0);
      xb[a][r] = vbroadcast(X[r * ldx + i0 + a]);
    }
  int64_t j = i0 + nr;
  for (; j + VW <= n; j += VW) {
    vd hv[RB];
    prefetch_rows(h, ldh, nr, j, n);
    for (int a = 0; a < nr; a++) hv[a] = vload(h + a * ldh + j);
    for (int r = 0; r < k; r++) {
      vd xv = vload(X + r * ldx + j), yv = vload(Y + r * ldy + j);
      for (int a = 0; a < nr; a++) {
        acc[a][r] += hv[a] * xv;
        yv += hv[a] * xb[a][r];
      }
      vstore(Y + r * ldy + j, yv);
    }
  }
  for (int r = 0; r < k; r++) {
    const double *x = X + r * ldx;
    double *y = Y + r * ldy;
    for (int a = 0; a < nr; a++) {
      double s = hsum(acc[a][r]), xa = x[i0 + a];
      for (int64_t l = j; l < n; l++) {
        s += h[a * ldh + l] * x[l];
        y[l] += h[a * ldh + l] * xa;
      }
      y[i0 + a] += dot[a][r] + s;
    }
  }
}

INLINE void upper_k(int k, int64_t n, const double *H, int64_t ldh, const double *X, int64_t ldx,
                    double *Y, int64_t ldy) {
  for (int r = 0; r < k; r++) memset(Y + r * ldy, 0, sizeof(double) * (size_t)n);
  int64_t i = 0;
  for (; i + RB <= n; i += RB) upper_block(k, RB, n, i, H, ldh, X, ldx, Y, ldy);
  for (; i < n; i++) upper_block(k, 1, n, i, H, ldh, X, ldx, Y, ldy);
}

CLONES void ms__fused_hmul_upper(int k, int64_t n, const double *H, int64_t ldh, const double *X,
                                 int64_t ldx, double *Y, int64_t ldy) {
  switch (k) {
    case 1:
      upper_k(1, n, H, ldh, X, ldx, Y, ldy);
      break;
    case 2:
      upper_k(2, n, H, ldh, X, ldx, Y, ldy);
      break;
    case 3:
      upper_k(3, n, H, ldh, X, ldx, Y, ldy);
      break;
    default:
      upper_k(4, n, H, ldh, X, ldx, Y, ldy);
      break;
  }
}

/* ---- least squares: R += a A S, then G = alpha A^T R ---- */

INLINE void ls_k(int k, int64_t m, int64_t n, const double *A, int64_t lda, double a,
                 const double *S, int64_t lds, double *R, int64_t ldr, double alpha, double *G,
                 int64_t ldg) {
  if (G)
    for (int r = 0; r < k; r++) memset(G + r * ldg, 0, sizeof(double) * (size_t)n);
  for (int64_t i = 0, nr; i < m; i += nr) {
    nr = m - i >= RB ? RB : 1;
    const double *h = A + i * lda;
    if (S) {
      /* the block's products A S; its rows stay in L1/L2 for the second sweep */
      double t[MS_FUSED_MAXK * RB];
      if (nr == RB)
        dense_block(k, RB, n, h, lda, S, lds, t, RB);
      else
        dense_block(k, 1, n, h, lda, S, lds, t, RB);
      for (int r = 0; r < k; r++)
        for (int b = 0; b < nr; b++) R[r * ldr + i + b] += a * t[r * RB + b];
    }
    if (G == NULL) continue;
    vd c[RB][MS_FUSED_MAXK];
    for (int r = 0; r < k; r++)
      for (int b = 0; b < nr; b++) c[b][r] = vbroadcast(alpha * R[r * ldr + i + b]);
    int64_t j = 0;
    for (; j + VW <= n; j += VW) {
      vd hv[RB];
      for (int b = 0; b < nr; b++) hv[b] = vload(h + b * lda + j);
      for (int r = 0; r < k; r++) {
        vd g = vload(G + r * ldg + j);
        for (int b = 0; b < nr; b++) g += hv[b] * c[b][r];
        vstore(G + r * ldg + j, g);
      }
    }
    for (; j < n; j++)
      for (int r = 0; r < k; r++)
        for (int b = 0; b < nr; b++) G[r * ldg + j] += h[b * lda + j] * c[b][r][0];
  }
}

CLONES void ms__fused_ls(int k, int64_t m, int64_t n, const double *A, int64_t lda, double a,
                         const double *S, int64_t lds, double *R, int64_t ldr, double alpha,
                         double *G, int64_t ldg) {
  switch (k) {
    case 1:
      ls_k(1, m, n, A, lda, a, S, lds, R, ldr, alpha, G, ldg);
      break;
    case 2:
      ls_k(2, m, n, A, lda, a, S, lds, R, ldr, alpha, G, ldg);
      break;
    case 3:
      ls_k(3, m, n, A, lda, a, S, lds, R, ldr, alpha, G, ldg);
      break;
    default:
      ls_k(4, m, n, A, lda, a, S, lds, R, ldr, alpha, G, ldg);
      break;
  }
}

/* ---- exact symmetry, compared in tiles so both reads stay in cache ---- */

int ms__fused_is_symmetric(int64_t n, const double *H, int64_t ldh) {
  enum { TILE = 64 };
  for (int64_t i0 = 0; i0 < n; i0 += TILE)
    for (int64_t j0 = i0; j0 < n; j0 += TILE) {
      int64_t i1 = i0 + TILE < n ? i0 + TILE : n, j1 = j0 + TILE < n ? j0 + TILE : n;
      for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j1; j++)
          if (H[i * ldh + j] != H[j * ldh + i]) return 0;
    }
  return 1;
}
