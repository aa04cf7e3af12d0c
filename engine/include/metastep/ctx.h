/*
 * metastep engine context: allocator, random generator, last error, interrupt flag.
 *
 * Every engine call takes an explicit ms_ctx. The engine keeps no global or static
 * mutable state, so two contexts in one process never interfere. Engine functions
 * return a status code (MS_OK on success) and never abort, exit or print; on failure
 * the context holds a message naming the function, the argument and the values involved.
 */
#ifndef METASTEP_CTX_H
#define METASTEP_CTX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. MS_OK is 0; every failure is a small positive number. Engine functions
 * return them as int (an ms_status value), so `if (st)` tests for failure. */
typedef enum ms_status {
  MS_OK = 0,
  MS_ENOMEM,     /* allocation failed or the context's memory budget is exhausted */
  MS_EARG,       /* invalid argument value (negative size, bad axis, non-finite, ...) */
  MS_ESHAPE,     /* shapes do not agree */
  MS_EINDEX,     /* index out of range */
  MS_ENUMERIC,   /* numerical failure (singular matrix, not positive definite, LAPACK info) */
  MS_ESTATE,     /* object in the wrong state (released, modified in place after being saved) */
  MS_EINTERRUPT, /* the computation was interrupted through ms_ctx_interrupt */
  MS_ECALLBACK,  /* a user callback reported an error */
  MS_EIO         /* a file could not be opened or read, or its contents are malformed */
} ms_status;

/* The library's version: "0.2.0", and as a number major * 10000 + minor * 100 + patch. A host
 * compares ms_version_number() with METASTEP_VERSION_NUMBER to detect a mismatched library. */
const char *ms_version(void);
int ms_version_number(void);

/* Returns a static string naming a status code ("ok", "out of memory", ...). */
const char *ms_status_name(int status);

/*
 * Allocator, with the same contract as lua_Alloc: nsize == 0 frees ptr and returns NULL;
 * otherwise (re)allocates ptr from osize to nsize bytes and returns NULL on failure.
 */
typedef void *(*ms_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/* A xoshiro256** generator. Plain value: copy it to fork a stream. */
typedef struct ms_rng {
  uint64_t s[4];
  int has_spare; /* Box-Muller produces normals in pairs */
  double spare;
} ms_rng;

/* Seeds a generator; the same seed gives the same stream on every machine. */
void ms_rng_seed(ms_rng *rng, uint64_t seed);
/* Next 64 random bits. */
uint64_t ms_rng_next(ms_rng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
double ms_rng_uniform(ms_rng *rng);
/* Standard normal (Box-Muller on two uniforms). */
double ms_rng_normal(ms_rng *rng);

typedef struct ms_ctx ms_ctx;

/*
 * Creates a context. alloc may be NULL for the C library's malloc/realloc/free.
 * Returns NULL only if the first allocation (the context itself) fails.
 * The generator starts from seed 0.
 */
ms_ctx *ms_ctx_new(ms_alloc_fn alloc, void *ud);
/* Frees the context. Every tensor made in it must have been released first. */
void ms_ctx_free(ms_ctx *ctx);

/* Message of the last failure (never NULL; "" when none). Borrowed, valid until the next call. */
const char *ms_ctx_error(const ms_ctx *ctx);
/* Status of the last failure (MS_OK when none). */
int ms_ctx_status(const ms_ctx *ctx);
/* Records a failure message (printf format) and returns status, for `return ms_ctx_fail(...)`. */
int ms_ctx_fail(ms_ctx *ctx, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Clears the last error. */
void ms_ctx_clear_error(ms_ctx *ctx);

/* Allocation through the context's allocator, counted against its budget. */
void *ms_ctx_alloc(ms_ctx *ctx, size_t nbytes);
void ms_ctx_dealloc(ms_ctx *ctx, void *ptr, size_t nbytes);
/* Bytes currently allocated through the context (tensor storage and bookkeeping). */
size_t ms_ctx_bytes(const ms_ctx *ctx);
/* Sets a budget in bytes (0 = unlimited); allocations beyond it fail with MS_ENOMEM. */
void ms_ctx_set_limit(ms_ctx *ctx, size_t nbytes);
size_t ms_ctx_limit(const ms_ctx *ctx);
/* Largest ms_ctx_bytes seen since the context was made or the last reset (memory benchmarks). */
size_t ms_ctx_peak_bytes(const ms_ctx *ctx);
void ms_ctx_reset_peak(ms_ctx *ctx);

/* An opaque pointer for the host (the Lua bindings keep the running lua_State here so
 * callbacks into Lua run on the right thread). The engine never looks at it. */
void ms_ctx_set_userdata(ms_ctx *ctx, void *ud);
void *ms_ctx_userdata(const ms_ctx *ctx);

/* The context's own generator (borrowed). */
ms_rng *ms_ctx_rng(ms_ctx *ctx);
void ms_ctx_seed(ms_ctx *ctx, uint64_t seed);

/*
 * Asks long-running engine loops to stop with MS_EINTERRUPT at their next check.
 * Async-signal-safe: it only stores to a volatile sig_atomic_t, so a SIGINT handler may call it.
 * The flag is cleared when a loop reports MS_EINTERRUPT, or by ms_ctx_clear_interrupt.
 */
void ms_ctx_interrupt(ms_ctx *ctx);
void ms_ctx_clear_interrupt(ms_ctx *ctx);
/* Returns MS_EINTERRUPT (with a message naming `where`) and clears the flag if it was set. */
int ms_ctx_check_interrupt(ms_ctx *ctx, const char *where);
/*
 * A host's budget check, asked by every ms_ctx_check_interrupt (engine loops call it at a
 * bounded interval: each unroll step, every 4096 steps of the stable unroll, each node of a
 * backward sweep, each meta-training iteration, BLAS-sized operations in blocks): a nonzero
 * return interrupts the loop as ms_ctx_interrupt does. poll must be cheap (a clock read) and
 * must not call the engine. NULL removes it.
 */
void ms_ctx_set_poll(ms_ctx *ctx, int (*poll)(void *ud), void *ud);

/* Matrix products (BLAS level 2 and 3 calls: matrix-vector and matrix-matrix) made by the
 * context's linear algebra since it was made: how many passes over a matrix a method makes, for
 * tests and benchmarks. */
uint64_t ms_ctx_products(const ms_ctx *ctx);

/*
 * OpenBLAS threads of the context's matrix products. n >= 1: every product runs on n threads.
 * n = 0 (the default): chosen per product by its size (ms_linalg_threads in linalg.h): one
 * thread for small products, where waking the other threads costs more than they save, all
 * cores for large ones; but when OPENBLAS_NUM_THREADS or OMP_NUM_THREADS was set in the
 * environment as the context was made, OpenBLAS's own setting is left alone. MS_EARG for n < 0.
 * OpenBLAS's thread count is per process: contexts with different settings in one process
 * each set it before their own products.
 */
int ms_ctx_set_threads(ms_ctx *ctx, int n);
/* The setting (0 = by size). */
int ms_ctx_threads(const ms_ctx *ctx);

/*
 * Check mode (off by default; costs one test per operation when off): every differentiable
 * primitive routes through the autodiff dispatch, which checks its output. The first one that
 * produces NaN or inf from finite inputs fails with MS_ENUMERIC and a message naming the
 * primitive and its input shapes ("check_numerics: log produced -inf from finite inputs of
 * shape [3]"). Non-finite values already in an input are not reported again.
 */
void ms_ctx_set_check_numerics(ms_ctx *ctx, int on);
int ms_ctx_check_numerics(const ms_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
