/* Context: allocator with a byte budget, seeded generator, last error, interrupt flag. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *ms_status_name(int status) {
  switch (status) {
    case MS_OK:
      return "ok";
    case MS_ENOMEM:
      return "out of memory";
    case MS_EARG:
      return "invalid argument";
    case MS_ESHAPE:
      return "shape mismatch";
    case MS_EINDEX:
      return "index out of range";
    case MS_ENUMERIC:
      return "numerical failure";
    case MS_ESTATE:
      return "invalid state";
    case MS_EINTERRUPT:
      return "interrupted";
    case MS_ECALLBACK:
      return "callback failed";
    case MS_EIO:
      return "input/output error";
    default:
      return "unknown status";
  }
}

/* ---- random numbers: splitmix64 seeding, xoshiro256** stream ---- */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void ms_rng_seed(ms_rng *rng, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
  rng->has_spare = 0;
  rng->spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ms_rng_next(ms_rng *rng) {
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double ms_rng_uniform(ms_rng *rng) { return (double)(ms_rng_next(rng) >> 11) * 0x1.0p-53; }

/* Box-Muller: u1 in (0, 1] so log never sees 0. Uses only log, sqrt, cos and sin,
 * which glibc rounds correctly enough that seeds reproduce across x86_64 machines. */
double ms_rng_normal(ms_rng *rng) {
  if (rng->has_spare) {
    rng->has_spare = 0;
    return rng->spare;
  }
  double u1 = 1.0 - ms_rng_uniform(rng);
  double u2 = ms_rng_uniform(rng);
  double r = sqrt(-2.0 * log(u1));
  double a = 6.283185307179586476925 * u2;
  rng->spare = r * sin(a);
  rng->has_spare = 1;
  return r * cos(a);
}

/* ---- context ---- */

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

ms_ctx *ms_ctx_new(ms_alloc_fn alloc, void *ud) {
  if (alloc == NULL) alloc = default_alloc;
  ms_ctx *ctx = alloc(ud, NULL, 0, sizeof(ms_ctx));
  if (ctx == NULL) return NULL;
  memset(ctx, 0, sizeof *ctx);
  ctx->alloc = alloc;
  ctx->ud = ud;
  ms_rng_seed(&ctx->rng, 0);
  ctx->threads_env = getenv("OPENBLAS_NUM_THREADS") != NULL || getenv("OMP_NUM_THREADS") != NULL;
  return ctx;
}

void ms_ctx_free(ms_ctx *ctx) {
  if (ctx == NULL) return;
  ctx->alloc(ctx->ud, ctx, sizeof(ms_ctx), 0);
}

const char *ms_ctx_error(const ms_ctx *ctx) { return ctx->err; }
int ms_ctx_status(const ms_ctx *ctx) { return ctx->status; }

int ms_ctx_fail(ms_ctx *ctx, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  ctx->status = status;
  return status;
}

void ms_ctx_clear_error(ms_ctx *ctx) {
  ctx->err[0] = '\0';
  ctx->status = MS_OK;
}

/* Fails (1) when n more bytes would exceed the context's budget. */
static int over_budget(ms_ctx *ctx, size_t n) {
  if (ctx->limit == 0 || (n <= ctx->limit && ctx->bytes <= ctx->limit - n)) return 0;
  ms_ctx_fail(ctx, MS_ENOMEM, "out of memory: %zu bytes requested, %zu in use, budget %zu bytes", n,
              ctx->bytes, ctx->limit);
  return 1;
}

/* p, the allocator's answer to a request for nbytes, counted as grow more bytes in use. */
static void *counted(ms_ctx *ctx, void *p, size_t nbytes, size_t grow) {
  if (p == NULL) {
    ms_ctx_fail(ctx, MS_ENOMEM, "out of memory: allocating %zu bytes failed", nbytes);
    return NULL;
  }
  ctx->bytes += grow;
  if (ctx->bytes > ctx->peak) ctx->peak = ctx->bytes;
  return p;
}

void *ms_ctx_alloc(ms_ctx *ctx, size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (over_budget(ctx, nbytes)) return NULL;
  return counted(ctx, ctx->alloc(ctx->ud, NULL, 0, nbytes), nbytes, nbytes);
}

void *ms__ctx_realloc(ms_ctx *ctx, void *ptr, size_t osize, size_t nsize) {
  if (ptr == NULL) return ms_ctx_alloc(ctx, nsize);
  if (nsize <= osize) return ptr;
  size_t grow = nsize - osize;
  if (over_budget(ctx, grow)) return NULL;
  return counted(ctx, ctx->alloc(ctx->ud, ptr, osize, nsize), nsize, grow);
}

void ms_ctx_dealloc(ms_ctx *ctx, void *ptr, size_t nbytes) {
  if (ptr == NULL) return;
  if (nbytes == 0) nbytes = 1;
  ctx->alloc(ctx->ud, ptr, nbytes, 0);
  ctx->bytes -= nbytes;
}

size_t ms_ctx_bytes(const ms_ctx *ctx) { return ctx->bytes; }
void ms_ctx_set_limit(ms_ctx *ctx, size_t nbytes) { ctx->limit = nbytes; }
size_t ms_ctx_limit(const ms_ctx *ctx) { return ctx->limit; }

void ms_ctx_set_userdata(ms_ctx *ctx, void *ud) { ctx->host = ud; }
void *ms_ctx_userdata(const ms_ctx *ctx) { return ctx->host; }

ms_rng *ms_ctx_rng(ms_ctx *ctx) { return &ctx->rng; }
void ms_ctx_seed(ms_ctx *ctx, uint64_t seed) { ms_rng_seed(&ctx->rng, seed); }

void ms_ctx_interrupt(ms_ctx *ctx) { ctx->interrupted = 1; }
void ms_ctx_clear_interrupt(ms_ctx *ctx) { ctx->interrupted = 0; }

void ms_ctx_set_poll(ms_ctx *ctx, int (*poll)(void *ud), void *ud) {
  ctx->poll = poll;
  ctx->poll_ud = ud;
}

int ms_ctx_check_interrupt(ms_ctx *ctx, const char *where) {
  if (!ctx->interrupted && ctx->poll != NULL && ctx->poll(ctx->poll_ud)) ctx->interrupted = 1;
  if (!ctx->interrupted) return MS_OK;
  ctx->interrupted = 0;
  return ms_ctx_fail(ctx, MS_EINTERRUPT, "%s: interrupted", where);
}

uint64_t ms_ctx_products(const ms_ctx *ctx) { return ctx->products; }

int ms_ctx_set_threads(ms_ctx *ctx, int n) {
  if (n < 0)
    return ms_ctx_fail(ctx, MS_EARG, "set_threads: n must be >= 1 (or 0 = by size), got %d", n);
  ctx->threads = n;
  return MS_OK;
}

int ms_ctx_threads(const ms_ctx *ctx) { return ctx->threads; }

size_t ms_ctx_peak_bytes(const ms_ctx *ctx) { return ctx->peak; }
void ms_ctx_reset_peak(ms_ctx *ctx) { ctx->peak = ctx->bytes; }

const char *ms_version(void) { return METASTEP_VERSION; }
int ms_version_number(void) { return METASTEP_VERSION_NUMBER; }

void ms_ctx_set_check_numerics(ms_ctx *ctx, int on) { ctx->check_numerics = on != 0; }
int ms_ctx_check_numerics(const ms_ctx *ctx) { return ctx->check_numerics; }
