/*
 * Context tests: status names, error messages, the byte budget, allocation failure at
 * every point of a sequence of tensor calls (no leaks), the generator against an
 * independent xoshiro256** / splitmix64 implementation, and the interrupt flag.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "metastep/ctx.h"
#include "metastep/tensor.h"

/* Clears the last error first, so a stale message cannot satisfy the check. */
#define FAILS(ctx, call, st, msg)    \
  do {                               \
    ms_ctx_clear_error(ctx);         \
    CHECK_FAILS(ctx, call, st, msg); \
  } while (0)

/* ---- independent reference generator (Blackman & Vigna, prng.di.unimi.it) ---- */

static uint64_t ref_splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

typedef struct {
  uint64_t s[4];
} ref_rng;

static void ref_seed(ref_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = ref_splitmix64(&x);
}

static uint64_t ref_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t ref_next(ref_rng *r) {
  uint64_t *s = r->s;
  const uint64_t result = ref_rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = ref_rotl(s[3], 45);
  return result;
}

/* The top 53 bits scaled by 2^-53: exactly representable, in [0, 1). */
static double ref_uniform(ref_rng *r) { return (double)(ref_next(r) >> 11) / 9007199254740992.0; }

/* ---- a counting allocator that fails after a set number of successes ---- */

typedef struct {
  long live;       /* blocks currently held */
  long succeeded;  /* successful allocations since armed */
  long fail_after; /* < 0: never fail */
  long injected;   /* failures returned */
  int one_shot;    /* fail only once, then succeed again */
} counting_alloc;

static void *counting_fn(void *ud, void *ptr, size_t osize, size_t nsize) {
  counting_alloc *a = ud;
  (void)osize;
  if (nsize == 0) {
    if (ptr != NULL) {
      free(ptr);
      a->live--;
    }
    return NULL;
  }
  if (a->fail_after >= 0 && a->succeeded >= a->fail_after && !(a->one_shot && a->injected)) {
    a->injected++;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (p != NULL) {
    a->succeeded++;
    if (ptr == NULL) a->live++;
  }
  return p;
}

/* ---- tests ---- */

static void test_status_names(void) {
  static const struct {
    int st;
    const char *name;
  } names[] = {{MS_OK, "ok"},
               {MS_ENOMEM, "out of memory"},
               {MS_EARG, "invalid argument"},
               {MS_ESHAPE, "shape mismatch"},
               {MS_EINDEX, "index out of range"},
               {MS_ENUMERIC, "numerical failure"},
               {MS_ESTATE, "invalid state"},
               {MS_EINTERRUPT, "interrupted"},
               {MS_ECALLBACK, "callback failed"},
               {MS_EIO, "input/output error"},
               {-1, "unknown status"},
               {MS_EIO + 1, "unknown status"}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    check_record(strcmp(ms_status_name(names[i].st), names[i].name) == 0, __FILE__, __LINE__,
                 "ms_status_name(%d) is \"%s\", wanted \"%s\"", names[i].st,
                 ms_status_name(names[i].st), names[i].name);
  /* Codes are distinct small positive numbers and the names are distinct. */
  CHECK(MS_OK == 0);
  for (int a = MS_OK; a <= MS_EIO; a++)
    for (int b = a + 1; b <= MS_EIO; b++) CHECK(strcmp(ms_status_name(a), ms_status_name(b)) != 0);
}

static void test_errors(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  CHECK(ctx != NULL);
  CHECK(ms_ctx_error(ctx) != NULL && ms_ctx_error(ctx)[0] == '\0');
  CHECK(ms_ctx_status(ctx) == MS_OK);

  CHECK(ms_ctx_fail(ctx, MS_ESHAPE, "matvec: %s x %s", "[3,4]", "[5]") == MS_ESHAPE);
  CHECK(strcmp(ms_ctx_error(ctx), "matvec: [3,4] x [5]") == 0);
  CHECK(ms_ctx_status(ctx) == MS_ESHAPE);

  /* A later failure replaces the message. */
  CHECK(ms_ctx_fail(ctx, MS_EARG, "value %d", 42) == MS_EARG);
  CHECK(strcmp(ms_ctx_error(ctx), "value 42") == 0);
  CHECK(ms_ctx_status(ctx) == MS_EARG);

  ms_ctx_clear_error(ctx);
  CHECK(ms_ctx_error(ctx)[0] == '\0');
  CHECK(ms_ctx_status(ctx) == MS_OK);

  /* A very long message is truncated, never overflowing, and stays NUL-terminated. */
  char big[2000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK(ms_ctx_fail(ctx, MS_EARG, "%s", big) == MS_EARG);
  size_t len = strlen(ms_ctx_error(ctx));
  CHECK(len > 100 && len < sizeof big - 1);
  CHECK(ms_ctx_error(ctx)[0] == 'x' && ms_ctx_error(ctx)[len - 1] == 'x');
  ms_ctx_clear_error(ctx);
  check_ctx_free(ctx);
  ms_ctx_free(NULL); /* ignored */
}

static void test_budget(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ms_tensor *t = (ms_tensor *)ctx, *u = NULL;
  CHECK(ms_ctx_limit(ctx) == 0);
  CHECK(ms_ctx_bytes(ctx) == 0);

  /* Raw allocations are counted exactly. */
  void *p = ms_ctx_alloc(ctx, 100);
  CHECK(p != NULL);
  CHECK(ms_ctx_bytes(ctx) == 100);
  void *q = ms_ctx_alloc(ctx, 28);
  CHECK(ms_ctx_bytes(ctx) == 128);
  ms_ctx_dealloc(ctx, p, 100);
  CHECK(ms_ctx_bytes(ctx) == 28);
  ms_ctx_dealloc(ctx, q, 28);
  CHECK(ms_ctx_bytes(ctx) == 0);
  ms_ctx_dealloc(ctx, NULL, 5); /* ignored */
  CHECK(ms_ctx_bytes(ctx) == 0);

  ms_ctx_set_limit(ctx, 1000);
  CHECK(ms_ctx_limit(ctx) == 1000);
  FAILS(ctx, ms_tensor_zeros(ctx, 1, (int64_t[]){1000}, &t), MS_ENOMEM, "budget");
  CHECK(t == NULL);
  CHECK(ms_ctx_status(ctx) == MS_ENOMEM);
  CHECK(ms_ctx_bytes(ctx) == 0);
  FAILS(ctx, ms_tensor_zeros(ctx, 2, (int64_t[]){20, 20}, &t), MS_ENOMEM, "budget");
  CHECK(t == NULL);
  /* A small tensor fits. */
  CHECK(ms_tensor_zeros(ctx, 1, (int64_t[]){10}, &t) == MS_OK);
  size_t used = ms_ctx_bytes(ctx);
  CHECK(used >= 80 && used <= 1000);
  /* A view needs a header; refused once the budget is full. */
  ms_ctx_set_limit(ctx, used);
  FAILS(ctx, ms_tensor_transpose(ctx, t, 0, 0, &u), MS_ENOMEM, "budget");
  CHECK(u == NULL);
  CHECK(ms_ctx_bytes(ctx) == used);
  ms_tensor_release(t);
  CHECK(ms_ctx_bytes(ctx) == 0);

  /* The budget is inclusive: exactly `used` bytes fit, one byte less does not. */
  ms_ctx_set_limit(ctx, used);
  CHECK(ms_tensor_zeros(ctx, 1, (int64_t[]){10}, &t) == MS_OK);
  CHECK(ms_ctx_bytes(ctx) == used);
  ms_tensor_release(t);
  ms_ctx_set_limit(ctx, used - 1);
  FAILS(ctx, ms_tensor_zeros(ctx, 1, (int64_t[]){10}, &t), MS_ENOMEM, "budget");
  CHECK(t == NULL);
  CHECK(ms_ctx_bytes(ctx) == 0);

  /* Back to unlimited. */
  ms_ctx_set_limit(ctx, 0);
  CHECK(ms_tensor_zeros(ctx, 1, (int64_t[]){100000}, &t) == MS_OK);
  CHECK(ms_ctx_bytes(ctx) >= 800000);
  ms_tensor_release(t);
  check_ctx_free(ctx);
}

/* Records the outcome of a constructor: success with a tensor, or MS_ENOMEM with NULL. */
static int outcome_ok(ms_ctx *ctx, int st, const ms_tensor *out) {
  if (st == MS_OK) return out != NULL;
  return st == MS_ENOMEM && out == NULL && strstr(ms_ctx_error(ctx), "out of memory") != NULL;
}

#define NSLOT 40

/*
 * Runs a fixed sequence of constructors, views, copies and cat; each call must either
 * succeed or fail cleanly with MS_ENOMEM. Later calls skip inputs that failed.
 * Returns the number of calls that broke the contract.
 */
static int run_sequence(ms_ctx *ctx, ms_tensor **slot) {
  int bad = 0, k = 0, st;
  const double data[6] = {1, 2, 3, 4, 5, 6};
#define MAKE(call)                             \
  do {                                         \
    slot[k] = (ms_tensor *)ctx; /* sentinel */ \
    ms_ctx_clear_error(ctx);                   \
    st = (call);                               \
    if (!outcome_ok(ctx, st, slot[k])) bad++;  \
    if (st != MS_OK) slot[k] = NULL;           \
    k++;                                       \
  } while (0)
/* MAKE when the inputs exist (ok), else leaves slot k empty. */
#define MAKE_IF(ok, call) \
  do {                    \
    if (ok)               \
      MAKE(call);         \
    else                  \
      k++;                \
  } while (0)
#define S(i) slot[i]
  MAKE(ms_tensor_zeros(ctx, 2, (int64_t[]){2, 3}, &slot[k]));                               /* 0 */
  MAKE(ms_tensor_ones(ctx, 1, (int64_t[]){3}, &slot[k]));                                   /* 1 */
  MAKE(ms_tensor_full(ctx, 2, (int64_t[]){3, 2}, 2.5, &slot[k]));                           /* 2 */
  MAKE(ms_tensor_scalar(ctx, 7, &slot[k]));                                                 /* 3 */
  MAKE(ms_tensor_from_data(ctx, 2, (int64_t[]){2, 3}, data, &slot[k]));                     /* 4 */
  MAKE(ms_tensor_eye(ctx, 3, 4, &slot[k]));                                                 /* 5 */
  MAKE(ms_tensor_arange(ctx, 0, 6, 1, &slot[k]));                                           /* 6 */
  MAKE(ms_tensor_linspace(ctx, 0, 1, 5, &slot[k]));                                         /* 7 */
  MAKE(ms_tensor_rand(ctx, NULL, 1, (int64_t[]){4}, 0, 1, &slot[k]));                       /* 8 */
  MAKE(ms_tensor_randn(ctx, NULL, 1, (int64_t[]){4}, 0, 1, &slot[k]));                      /* 9 */
  MAKE_IF(S(1), ms_tensor_diag(ctx, S(1), &slot[k]));                                       /* 10 */
  MAKE_IF(S(5), ms_tensor_diag(ctx, S(5), &slot[k]));                                       /* 11 */
  MAKE_IF(S(4), ms_tensor_copy(ctx, S(4), &slot[k]));                                       /* 12 */
  MAKE_IF(S(4), ms_tensor_transpose(ctx, S(4), 0, 1, &slot[k]));                            /* 13 */
  MAKE_IF(S(13), ms_tensor_contiguous(ctx, S(13), &slot[k]));                               /* 14 */
  MAKE_IF(S(13), ms_tensor_reshape(ctx, S(13), 1, (int64_t[]){-1}, &slot[k]));              /* 15 */
  MAKE_IF(S(4), ms_tensor_reshape(ctx, S(4), 2, (int64_t[]){3, 2}, &slot[k]));              /* 16 */
  MAKE_IF(S(4), ms_tensor_view(ctx, S(4), 1, (int64_t[]){6}, &slot[k]));                    /* 17 */
  MAKE_IF(S(4), ms_tensor_permute(ctx, S(4), (int[]){1, 0}, &slot[k]));                     /* 18 */
  MAKE_IF(S(6), ms_tensor_slice(ctx, S(6), 0, 1, 6, 2, &slot[k]));                          /* 19 */
  MAKE_IF(S(4), ms_tensor_select(ctx, S(4), 0, 1, &slot[k]));                               /* 20 */
  MAKE_IF(S(1), ms_tensor_expand(ctx, S(1), 2, (int64_t[]){4, 3}, &slot[k]));               /* 21 */
  MAKE_IF(S(0) && S(4), ms_tensor_cat(ctx, 2, (ms_tensor *[]){S(0), S(4)}, 0, &slot[k]));   /* 22 */
  MAKE_IF(S(13) && S(2), ms_tensor_cat(ctx, 2, (ms_tensor *[]){S(13), S(2)}, 1, &slot[k])); /* 23 */
  /* In-place copies: an allocation failure leaves dst untouched. */
  if (S(0) && S(1)) { /* broadcast copy needs an expanded header */
    uint64_t v = ms_tensor_version(S(0));
    ms_ctx_clear_error(ctx);
    st = ms_tensor_copy_(ctx, S(0), S(1));
    if (!(st == MS_OK || (st == MS_ENOMEM && ms_tensor_version(S(0)) == v))) bad++;
  }
  if (S(6) && S(19)) { /* overlapping self-copy needs a temporary */
    ms_tensor *dst = NULL;
    st = ms_tensor_slice(ctx, S(6), 0, 0, 3, 1, &dst);
    if (!outcome_ok(ctx, st, dst)) bad++;
    if (st == MS_OK) {
      double before[6], after[6];
      ms_tensor_read(ctx, S(6), before, 6);
      st = ms_tensor_copy_(ctx, dst, S(19));
      ms_tensor_read(ctx, S(6), after, 6);
      if (!(st == MS_OK || (st == MS_ENOMEM && memcmp(before, after, sizeof before) == 0))) bad++;
      ms_tensor_release(dst);
    }
  }
#undef MAKE
#undef MAKE_IF
#undef S
  return bad;
}

static void test_alloc_failure(void) {
  /* The context itself comes from the allocator: a failing one gives NULL. */
  counting_alloc a0 = {0, 0, 0, 0, 0};
  CHECK(ms_ctx_new(counting_fn, &a0) == NULL);
  CHECK(a0.live == 0 && a0.injected == 1);

  /* Reference run without failures: counts the allocations the sequence makes. */
  long total;
  {
    counting_alloc a = {0, 0, -1, 0, 0};
    ms_ctx *ctx = ms_ctx_new(counting_fn, &a);
    ms_tensor *slot[NSLOT] = {0};
    a.succeeded = 0;
    CHECK(run_sequence(ctx, slot) == 0);
    for (int i = 0; i < NSLOT; i++) CHECK(i >= 24 || slot[i] != NULL);
    total = a.succeeded;
    for (int i = 0; i < NSLOT; i++) ms_tensor_release(slot[i]);
    CHECK(ms_ctx_bytes(ctx) == 0);
    CHECK(a.live == 1); /* the context */
    ms_ctx_free(ctx);
    CHECK(a.live == 0);
  }
  CHECK(total > 20);

  /*
   * Fail after N successful allocations, for every N up to the whole sequence: either
   * every later allocation fails too, or only that one (so later calls run on the
   * survivors of a partial failure).
   */
  int all_clean = 1;
  for (long run = 0; run <= 2 * total + 1; run++) {
    int one_shot = run > total;
    long n = one_shot ? run - total - 1 : run;
    counting_alloc a = {0, 0, -1, 0, one_shot};
    ms_ctx *ctx = ms_ctx_new(counting_fn, &a);
    ms_tensor *slot[NSLOT] = {0};
    a.succeeded = 0;
    a.fail_after = n;
    int bad = run_sequence(ctx, slot);
    if (bad)
      fprintf(stderr, "fail after %ld (one shot %d): %d calls broke the contract\n", n, one_shot,
              bad);
    CHECK(bad == 0);
    CHECK(n == total ? a.injected == 0 : a.injected > 0);
    a.fail_after = -1;
    for (int i = 0; i < NSLOT; i++) ms_tensor_release(slot[i]);
    if (ms_ctx_bytes(ctx) != 0 || a.live != 1) {
      fprintf(stderr, "fail after %ld (one shot %d): %zu bytes, %ld blocks left\n", n, one_shot,
              ms_ctx_bytes(ctx), a.live);
      all_clean = 0;
    }
    ms_ctx_free(ctx);
    if (a.live != 0) all_clean = 0;
  }
  CHECK(all_clean);
}

static void test_rng_reference(void) {
  /* Published test vectors keep the reference implementation honest. */
  uint64_t x = 0;
  CHECK(ref_splitmix64(&x) == UINT64_C(0xE220A8397B1DCDAF));
  CHECK(ref_splitmix64(&x) == UINT64_C(0x6E789E6AA1B965F4));
  CHECK(ref_splitmix64(&x) == UINT64_C(0x06C45D188009454F));
  /* xoshiro256** from the state {1, 2, 3, 4} (rand_xoshiro's test vector). */
  static const uint64_t want[10] = {UINT64_C(11520),
                                    UINT64_C(0),
                                    UINT64_C(1509978240),
                                    UINT64_C(1215971899390074240),
                                    UINT64_C(1216172134540287360),
                                    UINT64_C(607988272756665600),
                                    UINT64_C(16172922978634559625),
                                    UINT64_C(8476171486693032832),
                                    UINT64_C(10595114339597558777),
                                    UINT64_C(2904607092377533576)};
  ref_rng r = {{1, 2, 3, 4}};
  ms_rng m = {{1, 2, 3, 4}, 0, 0};
  for (int i = 0; i < 10; i++) {
    CHECK(ref_next(&r) == want[i]);
    CHECK(ms_rng_next(&m) == want[i]);
  }

  /* Seeding: four splitmix64 outputs, then xoshiro256**; several seeds, 1000 draws. */
  const uint64_t seeds[] = {0, 1, 42, UINT64_C(0xDEADBEEFCAFEF00D), UINT64_MAX};
  for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
    ref_rng rr;
    ms_rng mr;
    ref_seed(&rr, seeds[k]);
    ms_rng_seed(&mr, seeds[k]);
    int same_state = 1, same = 1;
    for (int i = 0; i < 4; i++) same_state &= rr.s[i] == mr.s[i];
    CHECK(same_state);
    for (int i = 0; i < 1000; i++) same &= ref_next(&rr) == ms_rng_next(&mr);
    CHECK(same);
    /* Uniforms: top 53 bits. */
    same = 1;
    for (int i = 0; i < 1000; i++) same &= ref_uniform(&rr) == ms_rng_uniform(&mr);
    CHECK(same);
  }

  /* A new context starts from seed 0; ms_ctx_seed reseeds its generator. */
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  ref_rng rr;
  ref_seed(&rr, 0);
  int same = 1;
  for (int i = 0; i < 100; i++) same &= ms_rng_next(ms_ctx_rng(ctx)) == ref_next(&rr);
  CHECK(same);
  ms_ctx_seed(ctx, 12345);
  ref_seed(&rr, 12345);
  same = 1;
  for (int i = 0; i < 100; i++) same &= ms_rng_next(ms_ctx_rng(ctx)) == ref_next(&rr);
  CHECK(same);
  ms_ctx_free(ctx);

  /* Copying a generator forks the stream. */
  ms_rng g, h;
  ms_rng_seed(&g, 9);
  for (int i = 0; i < 5; i++) ms_rng_next(&g);
  h = g;
  same = 1;
  for (int i = 0; i < 100; i++) same &= ms_rng_next(&g) == ms_rng_next(&h);
  CHECK(same);
}

static void test_rng_distributions(void) {
  ms_rng g;
  ms_rng_seed(&g, 2024);
  int in_range = 1;
  double sum = 0;
  const int n = 200000;
  for (int i = 0; i < n; i++) {
    double u = ms_rng_uniform(&g);
    in_range &= u >= 0.0 && u < 1.0;
    sum += u;
  }
  CHECK(in_range);
  CHECK_NEAR(sum / n, 0.5, 0.005);

  /* The largest 64-bit output still maps below 1: the state {0, x, 0, 0} outputs
   * rotl(5x, 7) * 9, so pick x with rotl(5x, 7) * 9 == UINT64_MAX (mod 2^64). */
  {
    const uint64_t inv9 = UINT64_C(0x8E38E38E38E38E39); /* 9 * inv9 == 1 mod 2^64 */
    const uint64_t inv5 = UINT64_C(0xCCCCCCCCCCCCCCCD); /* 5 * inv5 == 1 mod 2^64 */
    uint64_t y = UINT64_MAX * inv9;                     /* rotl(5x, 7) */
    uint64_t x5 = (y >> 7) | (y << 57);                 /* rotr by 7 */
    ms_rng top = {{0, x5 * inv5, 0, 0}, 0, 0};
    ms_rng top2 = top;
    CHECK(ms_rng_next(&top) == UINT64_MAX);
    double u = ms_rng_uniform(&top2);
    CHECK(u < 1.0);
    CHECK(u == 1.0 - 0x1.0p-53);
  }

  ms_rng_seed(&g, 7);
  double s1 = 0, s2 = 0;
  int finite = 1;
  for (int i = 0; i < n; i++) {
    double z = ms_rng_normal(&g);
    finite &= isfinite(z);
    s1 += z;
    s2 += z * z;
  }
  double mean = s1 / n, var = s2 / n - mean * mean;
  CHECK(finite);
  CHECK(fabs(mean) < 0.01);
  CHECK(fabs(var - 1.0) < 0.02);

  /* Reseeding discards a cached Box-Muller spare: same seed, same normals. */
  ms_rng a, b;
  ms_rng_seed(&a, 5);
  (void)ms_rng_normal(&a); /* leaves a spare */
  ms_rng_seed(&a, 5);
  ms_rng_seed(&b, 5);
  int same = 1;
  for (int i = 0; i < 11; i++) same &= ms_rng_normal(&a) == ms_rng_normal(&b);
  CHECK(same);
}

static void test_two_contexts(void) {
  ms_ctx *c1 = ms_ctx_new(NULL, NULL), *c2 = ms_ctx_new(NULL, NULL);
  ms_ctx_seed(c1, 77);
  ms_ctx_seed(c2, 77);
  ref_rng r1, r2;
  ref_seed(&r1, 77);
  ref_seed(&r2, 77);
  /* Interleave unevenly: each context follows its own reference stream. */
  int ok = 1;
  for (int i = 0; i < 300; i++) {
    ok &= ms_rng_next(ms_ctx_rng(c1)) == ref_next(&r1);
    if (i % 3 == 0) {
      ok &= ms_rng_next(ms_ctx_rng(c2)) == ref_next(&r2);
      ok &= ms_rng_next(ms_ctx_rng(c2)) == ref_next(&r2);
    }
  }
  CHECK(ok);

  /* Same through tensor constructors that draw from the context generator. */
  ms_ctx_seed(c1, 3);
  ms_ctx_seed(c2, 3);
  ms_tensor *a1, *a2, *b1, *b2;
  CHECK(ms_tensor_rand(c1, NULL, 1, (int64_t[]){50}, 0, 1, &a1) == MS_OK);
  CHECK(ms_tensor_randn(c2, NULL, 1, (int64_t[]){7}, 0, 1, &b2) == MS_OK); /* c2 draws first */
  ms_ctx_seed(c2, 3);
  CHECK(ms_tensor_rand(c2, NULL, 1, (int64_t[]){50}, 0, 1, &a2) == MS_OK);
  CHECK(ms_tensor_randn(c1, NULL, 1, (int64_t[]){7}, 0, 1, &b1) == MS_OK);
  double x1[50], x2[50];
  ms_tensor_read(c1, a1, x1, 50);
  ms_tensor_read(c2, a2, x2, 50);
  CHECK(memcmp(x1, x2, sizeof x1) == 0);
  ref_rng r;
  ref_seed(&r, 3);
  ok = 1;
  for (int i = 0; i < 50; i++) ok &= x1[i] == ref_uniform(&r);
  CHECK(ok);

  /* Errors and budgets are per context. */
  ms_ctx_fail(c1, MS_EARG, "only in c1");
  CHECK(strcmp(ms_ctx_error(c1), "only in c1") == 0);
  CHECK(ms_ctx_error(c2)[0] == '\0');
  CHECK(ms_ctx_status(c2) == MS_OK);
  CHECK(ms_ctx_bytes(c1) > 0 && ms_ctx_bytes(c1) == ms_ctx_bytes(c2));
  ms_ctx_interrupt(c1);
  CHECK(ms_ctx_check_interrupt(c2, "c2") == MS_OK);
  CHECK(ms_ctx_check_interrupt(c1, "c1") == MS_EINTERRUPT);

  ms_tensor_release(a1);
  ms_tensor_release(b1);
  ms_tensor_release(a2);
  ms_tensor_release(b2);
  CHECK(ms_ctx_bytes(c1) == 0);
  CHECK(ms_ctx_bytes(c2) == 0);
  ms_ctx_free(c1);
  ms_ctx_free(c2);
}

static void test_interrupt(void) {
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  CHECK(ms_ctx_check_interrupt(ctx, "loop") == MS_OK);
  CHECK(ms_ctx_status(ctx) == MS_OK);
  ms_ctx_interrupt(ctx);
  FAILS(ctx, ms_ctx_check_interrupt(ctx, "adam step"), MS_EINTERRUPT, "adam step");
  CHECK(strstr(ms_ctx_error(ctx), "interrupted") != NULL);
  CHECK(ms_ctx_status(ctx) == MS_EINTERRUPT);
  /* Reported once, then cleared. */
  CHECK(ms_ctx_check_interrupt(ctx, "loop") == MS_OK);
  CHECK(ms_ctx_check_interrupt(ctx, "loop") == MS_OK);
  /* Several requests before a check still report once. */
  ms_ctx_interrupt(ctx);
  ms_ctx_interrupt(ctx);
  CHECK(ms_ctx_check_interrupt(ctx, "loop") == MS_EINTERRUPT);
  CHECK(ms_ctx_check_interrupt(ctx, "loop") == MS_OK);
  /* Clearing withdraws a pending request. */
  ms_ctx_interrupt(ctx);
  ms_ctx_clear_interrupt(ctx);
  CHECK(ms_ctx_check_interrupt(ctx, "loop") == MS_OK);
  check_ctx_free(ctx);
}

int main(void) {
  return check_run((const check_test[]){
      test_status_names, test_errors, test_budget, test_alloc_failure, test_rng_reference,
      test_rng_distributions, test_two_contexts, test_interrupt, NULL});
}
