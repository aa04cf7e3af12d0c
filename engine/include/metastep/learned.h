/*
 * Learned optimizers: small neural networks applied to every coordinate of w separately, with
 * weights theta shared by all coordinates, as ms_optim optimizers (optim.h).
 *
 * The step is batched over the d coordinates: the per-coordinate inputs form a [d, k] matrix
 * and each layer of the optimizer network is one matrix product, so a step costs a few BLAS
 * calls whatever d is. Every step is written with the engine's differentiable operations, so
 * the meta-gradient methods (reverse, truncated, checkpointed, forward, fd) see through it.
 *
 * learned_mlp, after Metz et al. (2019), "Understanding and correcting pathologies in the
 * training of learned optimizers":
 *   state   m [d, 5], v [d, 5]: averages of g and g^2 at decays b = {0.5, 0.9, 0.99, 0.999,
 *           0.9999}: m' = b m + (1 - b) g, v' = b v + (1 - b) g^2;
 *   inputs  x = [g, w, m', v', 1/sqrt(v' + 1e-8), m'/sqrt(v' + 1e-8)]  ([d, 22]), each column
 *           divided by its root mean square over the coordinates, sqrt(mean(x^2) + 1e-20);
 *           and the step count k embedded as tanh(k / tau), tau = 3, 10, 30, ..., 3e5 (11
 *           values, the same for every coordinate);
 *   network h = relu(x W1 + tanh(k / tau) W1t + b1) (hidden units, default 32),
 *           [d_out, s] = h W2 + b2;
 *   update  w' = w - step_scale * d_out * exp(exp_scale * s)   (defaults 0.001 and 0.001).
 *   theta   "w1" [22, H], "w1t" [11, H], "b1" [H], "w2" [H, 2], "b2" [2].
 * The seeded initialisation is descent-like: hidden units 1 and 2 read +m'(0.9) and
 * -m'(0.9) (normalised), and d_out = h_1 - h_2 (+ small random terms), so the untrained
 * optimizer takes normalised-momentum steps of about step_scale per coordinate.
 *
 * learned_lstm, after Andrychowicz et al. (2016), "Learning to learn by gradient descent by
 * gradient descent":
 *   inputs  the preprocessed gradient (p = 10): (log|g| / p, sign g) where |g| >= e^-p,
 *           else (-1, e^p g);
 *   network `layers` (1 or 2) LSTM layers of H units (default 20), per coordinate; a linear
 *           output y = h W_out + b_out;
 *   update  w' = w + out_scale * y (default out_scale 0.1);
 *   state   h and c of each layer, [d, H] each;
 *   theta   "wx1" [2, 4H], "wh1" [H, 4H], "b1" [4H], (layer 2: "wx2" [H, 4H], "wh2" [H, 4H],
 *           "b2" [4H]), "wout" [H, 1], "bout" [1]; gates ordered (input, forget, cell, output);
 *           forget-gate biases start at 1.
 *
 * Ownership as in optim.h: constructors return new references; tensors passed in are borrowed.
 */
#ifndef METASTEP_LEARNED_H
#define METASTEP_LEARNED_H

#include "metastep/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Options; zero-initialise and set what you need (0 means the default).
 *   seed        theta's initialisation (normal draws from this seed).
 *   hidden      hidden units: mlp 32, lstm 20 (1..4096).
 *   layers      lstm only: 1 or 2 (default 2).
 *   step_scale  mlp: the factor on d_out (0.001); lstm: out_scale (0.1). > 0.
 *   exp_scale   mlp: the factor on s (0.001). > 0.
 *   batch, batch_seed   > 0: the optimizer is stochastic (optim.h: mini-batch gradients of
 *               `batch` samples drawn by the unroll); 0: full gradients.
 *   theta       NULL, or one tensor per meta-parameter in the order above (borrowed, copied):
 *               the initial stored values instead of the seeded initialisation. Shapes are
 *               checked: MS_ESHAPE naming the parameter, expected and actual.
 */
typedef struct ms_learned_options {
  uint64_t seed;
  int hidden;
  int layers;
  double step_scale;
  double exp_scale;
  int64_t batch;
  uint64_t batch_seed;
  ms_tensor *const *theta;
} ms_learned_options;

int ms_optim_learned_mlp(ms_ctx *ctx, const ms_learned_options *opts, ms_optim **out);
int ms_optim_learned_lstm(ms_ctx *ctx, const ms_learned_options *opts, ms_optim **out);

/* The options a learned optimizer was made with (defaults filled in, theta NULL), or NULL when
 * opt is not a learned optimizer. Borrowed. */
const ms_learned_options *ms_learned_options_of(const ms_optim *opt);

/*
 * Saving and loading a learned optimizer: its kind, options and stored meta-parameters
 * (theta == NULL or NULL entries: the optimizer's initial values) go to the file at path;
 * ms_optim_load makes the same optimizer with the saved values as its initial values.
 * MS_EARG when opt is not a learned optimizer; a missing, truncated, corrupted or foreign
 * file is MS_EARG naming the path and what is wrong.
 */
int ms_optim_save(ms_ctx *ctx, const ms_optim *opt, ms_tensor *const *theta, const char *path);
int ms_optim_load(ms_ctx *ctx, const char *path, ms_optim **out);

#ifdef __cplusplus
}
#endif
#endif
