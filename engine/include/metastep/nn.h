/*
 * Networks on the tape: dense layers, an LSTM cell, and an MLP classifier whose weights are
 * one flat parameter vector, so the optimizers, unrolls and meta-gradient methods (which
 * work on one tensor w) take the whole network.
 *
 * Everything is written with the engine's differentiable operations (matmul, broadcasting
 * add, relu, sigmoid, tanh, views, softmax cross-entropy), so reverse tapes and forward
 * levels active around a call see through it, to any order. A mini-batch step is a few
 * BLAS calls (one product per layer and direction), never a loop over examples.
 *
 * Ownership: tensors handed out are NEW REFERENCES; tensor arguments are borrowed.
 * Bad shapes are MS_ESHAPE naming the function, the argument, and expected and actual
 * shapes; bad values MS_EARG.
 *
 * Flat MLP layout: for layers = {n0, n1, ..., nL} (2 <= nlayers = L + 1 <= MS_MLP_MAXLAYERS sizes,
 * each >= 1), w holds, for l = 1..L in order, W_l ([n_{l-1}, n_l], row-major) then b_l ([n_l]); its
 * length is sum_l (n_{l-1} + 1) n_l. Hidden layers use ReLU; the last layer gives logits.
 */
#ifndef METASTEP_NN_H
#define METASTEP_NN_H

#include <stdint.h>

#include "metastep/objective.h"
#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x W + b: x [n,in] (or [in]), W [in,out], b [out] or NULL -> [n,out] (or [out]). */
int ms_dense(ms_ctx *ctx, const ms_tensor *x, const ms_tensor *W, const ms_tensor *b,
             ms_tensor **out);

/*
 * One LSTM step for a batch of n rows: z = x Wx + h Wh + b ([n,4H]) split into the gates
 * i, f, g, o (column blocks 0..H-1, H..2H-1, 2H..3H-1, 3H..4H-1);
 *   c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c').
 * x [n,in], h [n,H], c [n,H], Wx [in,4H], Wh [H,4H], b [4H] or NULL. *h_out, *c_out [n,H].
 */
int ms_lstm_cell(ms_ctx *ctx, const ms_tensor *x, const ms_tensor *h, const ms_tensor *c,
                 const ms_tensor *Wx, const ms_tensor *Wh, const ms_tensor *b, ms_tensor **h_out,
                 ms_tensor **c_out);

/* Most sizes an MLP may have (input, hidden layers and output). */
#define MS_MLP_MAXLAYERS 16

/* Number of entries of the flat parameter vector of an MLP (checks layers: MS_EARG). */
int ms_mlp_size(ms_ctx *ctx, const int64_t *layers, int nlayers, int64_t *nparams);

/*
 * A fresh flat parameter vector: W_l entries N(0,1) * scale / sqrt(n_{l-1}) drawn from a
 * generator seeded with seed, b_l = 0. scale > 0 and finite (1.2 is a good default for
 * ReLU networks).
 */
int ms_mlp_init(ms_ctx *ctx, const int64_t *layers, int nlayers, uint64_t seed, double scale,
                ms_tensor **w);

/*
 * Views into w of layer l's parameters (1 <= l <= nlayers - 1): *W [n_{l-1}, n_l] and
 * *b [n_l] (new references, sharing w's storage when w is contiguous; differentiable).
 */
int ms_mlp_layer(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w, int l,
                 ms_tensor **W, ms_tensor **b);

/*
 * Logits [n, n_L] of the rows of X ([n, n_0]) under the flat parameters w ([P]). The layers
 * read w through views (a contiguous w is not copied), so the result is differentiable with
 * respect to w and X.
 */
int ms_mlp_forward(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w,
                   const ms_tensor *X, ms_tensor **logits);

/*
 * The mean softmax cross-entropy of the MLP over the rows of X ([n, n_0]) with labels y ([n],
 * class indices 0..n_L-1 as doubles), as an objective of the flat w (dim P, "mlp"). Its
 * samples are the rows (nsamples = n): grad_batch gathers the rows idx and differentiates
 * the mean loss over them, so sgd and ms_objective_grad_batch work. grad and grad_batch are
 * back-propagation written with differentiable engine operations (two products per layer,
 * one concatenation), hvp is forward mode over grad (derived by the engine), and everything
 * runs on the caller's active levels, so meta-gradients through unrolled steps work. X and y are
 * copied; labels out of range are MS_EARG here (not at the first call).
 */
int ms_objective_mlp(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *X,
                     const ms_tensor *y, ms_objective **out);

/* Share of rows of X whose largest logit is at class y (ties: the first), in [0,1]. Not
 * differentiable (computed on an untracked copy of w). */
int ms_mlp_accuracy(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w,
                    const ms_tensor *X, const ms_tensor *y, double *acc);

#ifdef __cplusplus
}
#endif
#endif
