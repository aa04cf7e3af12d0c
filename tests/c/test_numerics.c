/*
 * The check mode (ms_ctx_set_check_numerics): off by default; when on, the first primitive
 * producing NaN or inf from finite inputs fails with MS_ENUMERIC, naming the op, the first
 * non-finite element and the input shapes; non-finite inputs propagate silently; the check
 * covers the primitives run by a backward pass too. Expected messages are written by hand.
 */
#include <math.h>
#include <string.h>

#include "check.h"
#include "metastep/metastep.h"

static ms_ctx *ctx;

static ms_tensor *vec(int64_t n, const double *x) {
  ms_tensor *t = NULL;
  CHECK(ms_tensor_from_data(ctx, 1, &n, x, &t) == MS_OK);
  return t;
}

/* f(x) = sum(sqrt(x)): finite at x = [0, 1], but d/dx sqrt at 0 is 1 / (2 sqrt 0) = inf */
static int fsqrt(ms_ctx *c, void *ud, ms_tensor *x, ms_tensor **y) {
  (void)ud;
  ms_tensor *s = NULL;
  int st = ms_unary(c, MS_SQRT, x, &s);
  if (st == MS_OK) st = ms_reduce(c, MS_SUM, s, 0, 0, y);
  ms_tensor_release(s);
  return st;
}

static void test_check_numerics(void) {
  const double x[3] = {1, 0, 2}, zero_one[2] = {0, 1}, n[1] = {NAN};
  ms_tensor *a = vec(3, x), *z = vec(2, zero_one), *nan_in = vec(1, n), *out = NULL;
  CHECK(ms_ctx_check_numerics(ctx) == 0);
  /* off: -inf is data */
  CHECK(ms_unary(ctx, MS_LOG, a, &out) == MS_OK && isinf(ms_tensor_data(out)[1]));
  ms_tensor_release(out);

  ms_ctx_set_check_numerics(ctx, 1);
  CHECK(ms_ctx_check_numerics(ctx) == 1);
  out = (ms_tensor *)&out;
  CHECK(ms_unary(ctx, MS_LOG, a, &out) == MS_ENUMERIC);
  CHECK(out == NULL);
  CHECK(strcmp(ms_ctx_error(ctx),
               "check_numerics: log produced -inf at out[1] (0-based) from "
               "finite inputs of shape [3]") == 0);
  /* a binary op: the first non-finite element of the broadcast result */
  CHECK(ms_binary(ctx, MS_DIV, a, z, &out) == MS_ESHAPE); /* [3] / [2]: a shape error first */
  const double d2[2] = {1, 2};
  ms_tensor *b = vec(2, d2);
  CHECK(ms_binary(ctx, MS_DIV, b, z, &out) == MS_ENUMERIC);
  CHECK(strcmp(ms_ctx_error(ctx),
               "check_numerics: div produced inf at out[0] (0-based) from "
               "finite inputs of shapes [2] and [2]") == 0);
  /* a scalar operand and a finite result: fine */
  CHECK(ms_binary_scalar(ctx, MS_MUL, b, 3.0, 0, &out) == MS_OK);
  CHECK(ms_tensor_data(out)[1] == 6.0);
  ms_tensor_release(out);
  /* a NaN input propagates: it was not made here */
  CHECK(ms_unary(ctx, MS_EXP, nan_in, &out) == MS_OK && isnan(ms_tensor_data(out)[0]));
  ms_tensor_release(out);
  /* a backward pass: the forward is finite, the derivative of sqrt at 0 is not */
  ms_tensor *val = NULL, *g = NULL;
  CHECK(ms_grad(ctx, fsqrt, NULL, z, &val, &g) == MS_ENUMERIC);
  CHECK(val == NULL && g == NULL);
  CHECK(strstr(ms_ctx_error(ctx), "check_numerics: ") == ms_ctx_error(ctx));
  CHECK(strstr(ms_ctx_error(ctx), "produced inf at out[0]") != NULL);
  CHECK(ms_ad_depth(ctx) == 0);
  /* and at a point where everything is finite the gradient is 1 / (2 sqrt x) */
  const double p4[2] = {4, 1};
  ms_tensor *w = vec(2, p4);
  CHECK(ms_grad(ctx, fsqrt, NULL, w, &val, &g) == MS_OK);
  CHECK(ms_tensor_data(val)[0] == 3.0);
  CHECK(ms_tensor_data(g)[0] == 0.25 && ms_tensor_data(g)[1] == 0.5);
  ms_tensor_release(val);
  ms_tensor_release(g);

  /* views compute nothing and are not scanned: a 2^40-element expand of one element */
  const int64_t huge[2] = {INT64_C(1) << 20, INT64_C(1) << 20};
  ms_tensor *one = NULL, *big = NULL;
  CHECK(ms_tensor_scalar(ctx, 1.0, &one) == MS_OK);
  CHECK(ms_tensor_expand(ctx, one, 2, huge, &big) == MS_OK);
  CHECK(big != NULL && ms_tensor_numel(big) == INT64_C(1) << 40);
  ms_tensor_release(big);
  ms_tensor_release(one);

  ms_ctx_set_check_numerics(ctx, 0);
  CHECK(ms_unary(ctx, MS_LOG, a, &out) == MS_OK);
  ms_tensor_release(out);
  ms_tensor *ts[] = {a, z, nan_in, b, w};
  for (int i = 0; i < 5; i++) ms_tensor_release(ts[i]);
}

int main(void) { return check_main(&ctx, (const check_test[]){test_check_numerics, NULL}); }
