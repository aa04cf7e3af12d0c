/*
 * An llm.c-shaped training loop that takes its learning rate per step from metastep.
 *
 * The model is a tiny MLP written in plain C with its own forward and backward (llm.c's
 * *_forward / *_backward pairs, dinp/dweight/dout names) and an AdamW update with llm.c's
 * signature, mlp_update(model, learning_rate, beta1, beta2, eps, weight_decay, t). The only
 * change to such a loop is where the settings come from:
 *
 *   ms_provider_observe(prov, NP, model.grads, t > 1 ? model.dir : NULL);   (online tuners)
 *   ms_provider_get(prov, t, &p);
 *   mlp_update(&model, p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, t);
 *
 * Two providers train the same model: a warmup-then-cosine schedule (ms_provider_schedule)
 * and hypergradient descent on the learning rate, started 10x too small
 * (ms_provider_hypergradient). Task: fit y = sin(x) on 64 points of [-3, 3].
 *
 * Exits nonzero unless both runs cut the loss by 10x and the online tuner raised its
 * learning rate. Built by CMake (example_mlp_provider, run by ctest) and against an installed
 * metastep by tests/sh/test_install.sh.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metastep/metastep.h"

#define B 64 /* points */
#define H 16 /* hidden units */
#define NP (3 * H + 1)
#define STEPS 1500

/* parameters, gradients, AdamW moments and the last update direction, all flat: W1 b1 W2 b2 */
typedef struct mlp {
  double params[NP], grads[NP], m[NP], v[NP], dir[NP];
  double hid[B][H], out[B]; /* activations saved by the forward pass */
} mlp;

#define W1(p) ((p) + 0)
#define B1(p) ((p) + H)
#define W2(p) ((p) + 2 * H)
#define B2(p) ((p) + 3 * H)

static void mlp_init(mlp *model, uint64_t seed) {
  memset(model, 0, sizeof *model);
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  for (int i = 0; i < NP; i++) model->params[i] = 0.5 * ms_rng_normal(&rng);
}

/* Mean squared error of the network on (x, y); saves activations for the backward pass. */
static double mlp_forward(mlp *model, const double *x, const double *y) {
  const double *p = model->params;
  double loss = 0;
  for (int b = 0; b < B; b++) {
    double o = *B2(p);
    for (int h = 0; h < H; h++) {
      model->hid[b][h] = tanh(W1(p)[h] * x[b] + B1(p)[h]);
      o += W2(p)[h] * model->hid[b][h];
    }
    model->out[b] = o;
    loss += (o - y[b]) * (o - y[b]) / B;
  }
  return loss;
}

static void mlp_backward(mlp *model, const double *x, const double *y) {
  const double *p = model->params;
  double *g = model->grads;
  memset(g, 0, sizeof model->grads);
  for (int b = 0; b < B; b++) {
    double dout = 2 * (model->out[b] - y[b]) / B;
    *B2(g) += dout;
    for (int h = 0; h < H; h++) {
      W2(g)[h] += dout * model->hid[b][h];
      double dpre = dout * W2(p)[h] * (1 - model->hid[b][h] * model->hid[b][h]);
      W1(g)[h] += dpre * x[b];
      B1(g)[h] += dpre;
    }
  }
}

/* AdamW as in llm.c; also keeps the direction of the step (update = learning_rate * dir). */
static void mlp_update(mlp *model, double learning_rate, double beta1, double beta2, double eps,
                       double weight_decay, int t) {
  for (int i = 0; i < NP; i++) {
    double grad = model->grads[i];
    model->m[i] = beta1 * model->m[i] + (1 - beta1) * grad;
    model->v[i] = beta2 * model->v[i] + (1 - beta2) * grad * grad;
    double mhat = model->m[i] / (1 - pow(beta1, t)), vhat = model->v[i] / (1 - pow(beta2, t));
    model->dir[i] = mhat / (sqrt(vhat) + eps) + weight_decay * model->params[i];
    model->params[i] -= learning_rate * model->dir[i];
  }
}

/* Trains a fresh model with the provider's settings; returns the final loss (NaN on failure). */
static double run(const char *name, ms_provider *prov, const double *x, const double *y,
                  double *first_loss) {
  static mlp model; /* 20 kB, reset by mlp_init on each run */
  mlp_init(&model, 1);
  double loss = NAN;
  for (int t = 1; t <= STEPS; t++) {
    loss = mlp_forward(&model, x, y);
    if (t == 1) *first_loss = loss;
    mlp_backward(&model, x, y);
    ms_step_params p;
    if (ms_provider_observe(prov, NP, model.grads, t > 1 ? model.dir : NULL) ||
        ms_provider_get(prov, t, &p)) {
      fprintf(stderr, "%s: %s\n", name, ms_ctx_error(ms_provider_ctx(prov)));
      return NAN;
    }
    mlp_update(&model, p.lr, p.beta1, p.beta2, p.eps, p.weight_decay, t);
    if (t == 1 || t % 500 == 0) printf("%-12s step %4d  lr %.5f  loss %.6f\n", name, t, p.lr, loss);
  }
  return mlp_forward(&model, x, y);
}

int main(void) {
  double x[B], y[B];
  for (int b = 0; b < B; b++) x[b] = -3 + 6.0 * b / (B - 1), y[b] = sin(x[b]);
  ms_ctx *ctx = ms_ctx_new(NULL, NULL);
  if (ctx == NULL) return 1;
  int fail = 0;

  /* warmup over 100 steps, then a cosine decay to 10% over the rest */
  static double factors[STEPS];
  for (int t = 0; t < STEPS; t++)
    factors[t] = t < 100 ? (t + 1) / 100.0
                         : 0.1 + 0.45 * (1 + cos(3.141592653589793 * (t - 100) / (STEPS - 100)));
  ms_step_params base = {0.01, 0.9, 0.999, 1e-8, 0.0, 0};
  ms_provider *sched = NULL, *hd = NULL;
  double l0 = NAN, l1 = NAN, h0 = NAN, h1 = NAN;
  if (ms_provider_schedule(ctx, &base, STEPS, factors, &sched) == MS_OK)
    l1 = run("schedule", sched, x, y, &l0);
  base.lr = 0.001;
  if (ms_provider_hypergradient(ctx, &base, 1e-4, 1e-5, 0.05, &hd) == MS_OK)
    h1 = run("hypergrad", hd, x, y, &h0);
  ms_step_params last = {0};
  if (hd) ms_provider_get(hd, STEPS, &last);
  printf("schedule:  loss %.6f -> %.6f\n", l0, l1);
  printf("hypergrad: loss %.6f -> %.6f (lr 0.001 -> %.5f)\n", h0, h1, last.lr);
  if (!(l1 < l0 / 10) || !(h1 < h0 / 10) || !(last.lr > 0.001)) fail = 1;
  if (ms_ctx_error(ctx)[0]) fprintf(stderr, "metastep: %s\n", ms_ctx_error(ctx));
  ms_provider_free(sched);
  ms_provider_free(hd);
  if (ms_ctx_bytes(ctx) != 0) fail = 1;
  ms_ctx_free(ctx);
  return fail;
}
