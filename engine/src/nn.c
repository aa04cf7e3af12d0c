/*
 * Networks on the tape (nn.h): dense layers, the LSTM cell and the flat-parameter MLP with
 * its objective.
 *
 * Nothing here has a derivative rule of its own: every layer is a composition of the
 * engine's differentiable primitives (matmul, broadcasting add, the element-wise
 * nonlinearities, slices and views, softmax cross-entropy), so the tape records it and the
 * primitives' rules give first and higher derivatives. The MLP objective's gradient is
 * written out (mlp_grad_rows) with the same differentiable operations, for speed: see there.
 */
#include "metastep/nn.h"

#include <math.h>
#include <string.h>

#include "metastep/autodiff.h"
#include "metastep/linalg.h"
#include "metastep/ops.h"

#define TRY(call)                          \
  do {                                     \
    if ((st = (call)) != MS_OK) goto done; \
  } while (0)

/* Releases the tensors and sets the variables to NULL. */
#define DROP(...)                         \
  drop_all((ms_tensor **[]){__VA_ARGS__}, \
           sizeof((ms_tensor **[]){__VA_ARGS__}) / sizeof(ms_tensor **))

static inline void drop_all(ms_tensor ***ps, size_t n) {
  for (size_t i = 0; i < n; i++) {
    ms_tensor_release(*ps[i]);
    *ps[i] = NULL;
  }
}

#define RELEASE(...)                        \
  release_all((ms_tensor *[]){__VA_ARGS__}, \
              sizeof((ms_tensor *[]){__VA_ARGS__}) / sizeof(ms_tensor *))

static inline void release_all(ms_tensor *const *ts, size_t n) {
  for (size_t i = 0; i < n; i++) ms_tensor_release(ts[i]);
}

static const char *shp(const ms_tensor *t, char *buf) {
  return ms_shape_str(ms_tensor_ndim(t), ms_tensor_shape(t), buf, MS_SHAPE_STRLEN);
}

/* ---- dense ---- */

static int check_dense(ms_ctx *ctx, const char *fn, const ms_tensor *x, const ms_tensor *W,
                       const ms_tensor *b) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  if (x == NULL || W == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: x and W are required", fn);
  if (ms_tensor_ndim(W) != 2)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: W must be a matrix [in,out], got shape %s", fn,
                       shp(W, b1));
  int nd = ms_tensor_ndim(x);
  if ((nd != 1 && nd != 2) || ms_tensor_dim(x, nd - 1) != ms_tensor_dim(W, 0))
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: x has shape %s, expected [n,%lld] or [%lld] (W is %s)",
                       fn, shp(x, b1), (long long)ms_tensor_dim(W, 0),
                       (long long)ms_tensor_dim(W, 0), shp(W, b2));
  if (b && (ms_tensor_ndim(b) != 1 || ms_tensor_dim(b, 0) != ms_tensor_dim(W, 1)))
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: b has shape %s, expected [%lld] (W is %s)", fn,
                       shp(b, b1), (long long)ms_tensor_dim(W, 1), shp(W, b2));
  return MS_OK;
}

static int dense(ms_ctx *ctx, const ms_tensor *x, const ms_tensor *W, const ms_tensor *b,
                 ms_tensor **out) {
  if (b == NULL) return ms_matmul(ctx, x, W, out);
  ms_tensor *xw = NULL;
  int st = ms_matmul(ctx, x, W, &xw);
  if (st == MS_OK) st = ms_binary(ctx, MS_ADD, xw, b, out);
  ms_tensor_release(xw);
  return st;
}

int ms_dense(ms_ctx *ctx, const ms_tensor *x, const ms_tensor *W, const ms_tensor *b,
             ms_tensor **out) {
  *out = NULL;
  int st = check_dense(ctx, "dense", x, W, b);
  if (st) return st;
  return dense(ctx, x, W, b, out);
}

/* ---- LSTM cell ---- */

int ms_lstm_cell(ms_ctx *ctx, const ms_tensor *x, const ms_tensor *h, const ms_tensor *c,
                 const ms_tensor *Wx, const ms_tensor *Wh, const ms_tensor *b, ms_tensor **h_out,
                 ms_tensor **c_out) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  *h_out = *c_out = NULL;
  if (x == NULL || h == NULL || c == NULL || Wx == NULL || Wh == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "lstm_cell: x, h, c, Wx and Wh are required");
  if (ms_tensor_ndim(h) != 2)
    return ms_ctx_fail(ctx, MS_ESHAPE, "lstm_cell: h must be a matrix [n,H], got shape %s",
                       shp(h, b1));
  int64_t n = ms_tensor_dim(h, 0), H = ms_tensor_dim(h, 1);
  if (ms_tensor_ndim(x) != 2 || ms_tensor_dim(x, 0) != n)
    return ms_ctx_fail(ctx, MS_ESHAPE, "lstm_cell: x has shape %s, expected [%lld,in] (h is %s)",
                       shp(x, b1), (long long)n, shp(h, b2));
  if (ms_tensor_ndim(c) != 2 || ms_tensor_dim(c, 0) != n || ms_tensor_dim(c, 1) != H)
    return ms_ctx_fail(ctx, MS_ESHAPE, "lstm_cell: c has shape %s, expected [%lld,%lld] (as h)",
                       shp(c, b1), (long long)n, (long long)H);
  int64_t in = ms_tensor_dim(x, 1);
  if (ms_tensor_ndim(Wx) != 2 || ms_tensor_dim(Wx, 0) != in || ms_tensor_dim(Wx, 1) != 4 * H)
    return ms_ctx_fail(ctx, MS_ESHAPE, "lstm_cell: Wx has shape %s, expected [%lld,%lld]",
                       shp(Wx, b1), (long long)in, (long long)(4 * H));
  if (ms_tensor_ndim(Wh) != 2 || ms_tensor_dim(Wh, 0) != H || ms_tensor_dim(Wh, 1) != 4 * H)
    return ms_ctx_fail(ctx, MS_ESHAPE, "lstm_cell: Wh has shape %s, expected [%lld,%lld]",
                       shp(Wh, b1), (long long)H, (long long)(4 * H));
  if (b && (ms_tensor_ndim(b) != 1 || ms_tensor_dim(b, 0) != 4 * H))
    return ms_ctx_fail(ctx, MS_ESHAPE, "lstm_cell: b has shape %s, expected [%lld]", shp(b, b1),
                       (long long)(4 * H));
  ms_tensor *zx = NULL, *zh = NULL, *z = NULL, *blk[4] = {NULL, NULL, NULL, NULL};
  ms_tensor *gi = NULL, *gf = NULL, *gg = NULL, *go = NULL, *fc = NULL, *ig = NULL, *tc = NULL;
  int st;
  TRY(dense(ctx, x, Wx, b, &zx));
  TRY(ms_matmul(ctx, h, Wh, &zh));
  TRY(ms_binary(ctx, MS_ADD, zx, zh, &z));
  for (int k = 0; k < 4; k++) TRY(ms_tensor_slice(ctx, z, 1, k * H, (k + 1) * H, 1, &blk[k]));
  TRY(ms_unary(ctx, MS_SIGMOID, blk[0], &gi));
  TRY(ms_unary(ctx, MS_SIGMOID, blk[1], &gf));
  TRY(ms_unary(ctx, MS_TANH, blk[2], &gg));
  TRY(ms_unary(ctx, MS_SIGMOID, blk[3], &go));
  TRY(ms_binary(ctx, MS_MUL, gf, c, &fc));
  TRY(ms_binary(ctx, MS_MUL, gi, gg, &ig));
  TRY(ms_binary(ctx, MS_ADD, fc, ig, c_out));
  TRY(ms_unary(ctx, MS_TANH, *c_out, &tc));
  TRY(ms_binary(ctx, MS_MUL, go, tc, h_out));
done:
  RELEASE(zx, zh, z, blk[0], blk[1], blk[2], blk[3], gi, gf, gg, go, fc, ig, tc);
  if (st) {
    ms_tensor_release(*h_out);
    ms_tensor_release(*c_out);
    *h_out = *c_out = NULL;
  }
  return st;
}

/* ---- MLP on a flat parameter vector ---- */

int ms_mlp_size(ms_ctx *ctx, const int64_t *layers, int nlayers, int64_t *nparams) {
  *nparams = 0;
  if (layers == NULL) return ms_ctx_fail(ctx, MS_EARG, "mlp: layers is NULL");
  if (nlayers < 2 || nlayers > MS_MLP_MAXLAYERS)
    return ms_ctx_fail(ctx, MS_EARG,
                       "mlp: layers must list 2..%d sizes (input, hidden..., output), got %d",
                       MS_MLP_MAXLAYERS, nlayers);
  int64_t p = 0;
  for (int l = 0; l < nlayers; l++) {
    if (layers[l] < 1 || layers[l] > ((int64_t)1 << 24))
      return ms_ctx_fail(ctx, MS_EARG, "mlp: layer size %d must be in 1..2^24, got %lld", l + 1,
                         (long long)layers[l]);
    if (l > 0) p += (layers[l - 1] + 1) * layers[l];
  }
  *nparams = p;
  return MS_OK;
}

int ms_mlp_init(ms_ctx *ctx, const int64_t *layers, int nlayers, uint64_t seed, double scale,
                ms_tensor **w) {
  *w = NULL;
  int64_t P;
  int st = ms_mlp_size(ctx, layers, nlayers, &P);
  if (st) return st;
  if (!(scale > 0) || !isfinite(scale))
    return ms_ctx_fail(ctx, MS_EARG, "mlp_init: scale must be finite and > 0, got %g", scale);
  st = ms_tensor_zeros(ctx, 1, &P, w);
  if (st) return st;
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  double *d = ms_tensor_data(*w);
  int64_t off = 0;
  for (int l = 1; l < nlayers; l++) {
    double s = scale / sqrt((double)layers[l - 1]);
    int64_t nw = layers[l - 1] * layers[l];
    for (int64_t k = 0; k < nw; k++) d[off + k] = s * ms_rng_normal(&rng);
    off += nw + layers[l]; /* the biases stay 0 */
  }
  return MS_OK;
}

/* The parameters of layer l (1-based) as views into w: W [n_{l-1}, n_l], b [n_l]. */
static int layer_params(ms_ctx *ctx, const int64_t *layers, int l, int64_t off, const ms_tensor *w,
                        ms_tensor **W, ms_tensor **b) {
  int64_t shape[2] = {layers[l - 1], layers[l]}, nw = shape[0] * shape[1];
  ms_tensor *s = NULL;
  *W = *b = NULL;
  int st = ms_tensor_slice(ctx, w, 0, off, off + nw, 1, &s);
  if (st == MS_OK) st = ms_tensor_reshape(ctx, s, 2, shape, W);
  if (st == MS_OK) st = ms_tensor_slice(ctx, w, 0, off + nw, off + nw + shape[1], 1, b);
  ms_tensor_release(s);
  return st;
}

static int check_w(ms_ctx *ctx, const char *fn, const ms_tensor *w, int64_t P) {
  char b1[MS_SHAPE_STRLEN];
  if (w == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: w is NULL", fn);
  if (ms_tensor_ndim(w) != 1 || ms_tensor_dim(w, 0) != P)
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "%s: w has shape %s, expected [%lld] (the flat parameters of the layers)",
                       fn, shp(w, b1), (long long)P);
  return MS_OK;
}

static int check_X(ms_ctx *ctx, const char *fn, const ms_tensor *X, int64_t n0) {
  char b1[MS_SHAPE_STRLEN];
  if (X == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: X is NULL", fn);
  if (ms_tensor_ndim(X) != 2 || ms_tensor_dim(X, 1) != n0)
    return ms_ctx_fail(ctx, MS_ESHAPE, "%s: X has shape %s, expected [n,%lld]", fn, shp(X, b1),
                       (long long)n0);
  return MS_OK;
}

/* y: [n] of class indices 0..k-1 (checked on the data). */
static int check_y(ms_ctx *ctx, const char *fn, const ms_tensor *y, int64_t n, int64_t k) {
  char b1[MS_SHAPE_STRLEN];
  if (y == NULL) return ms_ctx_fail(ctx, MS_EARG, "%s: y is NULL", fn);
  if (ms_tensor_ndim(y) != 1 || ms_tensor_dim(y, 0) != n)
    return ms_ctx_fail(ctx, MS_ESHAPE,
                       "%s: y has shape %s, expected [%lld] (one label per row of X)", fn,
                       shp(y, b1), (long long)n);
  const int64_t *str = ms_tensor_strides(y);
  const double *d = ms_tensor_data(y);
  for (int64_t i = 0; i < n; i++) {
    double v = d[i * str[0]];
    if (!(v >= 0 && v < (double)k && v == floor(v)))
      return ms_ctx_fail(ctx, MS_EARG, "%s: label %g of row %lld is not a class index in 0..%lld",
                         fn, v, (long long)i + 1, (long long)k - 1);
  }
  return MS_OK;
}

int ms_mlp_layer(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w, int l,
                 ms_tensor **W, ms_tensor **b) {
  *W = *b = NULL;
  int64_t P;
  int st = ms_mlp_size(ctx, layers, nlayers, &P);
  if (st == MS_OK) st = check_w(ctx, "mlp_layer", w, P);
  if (st) return st;
  if (l < 1 || l > nlayers - 1)
    return ms_ctx_fail(ctx, MS_EINDEX, "mlp_layer: layer %d out of range 1..%d", l, nlayers - 1);
  int64_t off = 0;
  for (int k = 1; k < l; k++) off += (layers[k - 1] + 1) * layers[k];
  st = layer_params(ctx, layers, l, off, w, W, b);
  if (st) {
    ms_tensor_release(*W);
    ms_tensor_release(*b);
    *W = *b = NULL;
  }
  return st;
}

static int mlp_forward(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w,
                       const ms_tensor *X, ms_tensor **logits) {
  ms_tensor *h = ms_tensor_retain((ms_tensor *)X), *W = NULL, *b = NULL, *z = NULL;
  int64_t off = 0;
  int st = MS_OK;
  for (int l = 1; l < nlayers; l++) {
    TRY(layer_params(ctx, layers, l, off, w, &W, &b));
    TRY(dense(ctx, h, W, b, &z));
    ms_tensor_release(h);
    h = NULL;
    if (l < nlayers - 1) {
      TRY(ms_unary(ctx, MS_RELU, z, &h));
      ms_tensor_release(z);
    } else {
      h = z;
    }
    z = NULL;
    ms_tensor_release(W);
    ms_tensor_release(b);
    W = b = NULL;
    off += (layers[l - 1] + 1) * layers[l];
  }
  *logits = h;
  h = NULL;
done:
  RELEASE(h, W, b, z);
  return st;
}

int ms_mlp_forward(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w,
                   const ms_tensor *X, ms_tensor **logits) {
  *logits = NULL;
  int64_t P;
  int st = ms_mlp_size(ctx, layers, nlayers, &P);
  if (st == MS_OK) st = check_w(ctx, "mlp_forward", w, P);
  if (st == MS_OK) st = check_X(ctx, "mlp_forward", X, layers[0]);
  if (st) return st;
  return mlp_forward(ctx, layers, nlayers, w, X, logits);
}

/* The network and its data; onehot [n,k] holds the labels as indicator rows. */
typedef struct mlp {
  ms_ctx *ctx;
  int nlayers;
  int64_t layers[MS_MLP_MAXLAYERS];
  ms_tensor *X, *y, *onehot;
} mlp;

static void mlp_free(void *ud) {
  mlp *m = ud;
  ms_tensor_release(m->X);
  ms_tensor_release(m->y);
  ms_tensor_release(m->onehot);
  ms_ctx_dealloc(m->ctx, m, sizeof *m);
}

/* mean_i xent(mlp(X_i), y_i) */
static int mean_loss(ms_ctx *ctx, const mlp *m, ms_tensor *w, const ms_tensor *X,
                     const ms_tensor *y, ms_tensor **out) {
  ms_tensor *logits = NULL, *l = NULL;
  int st;
  TRY(mlp_forward(ctx, m->layers, m->nlayers, w, X, &logits));
  TRY(ms_softmax_xent(ctx, logits, y, &l));
  TRY(ms_reduce(ctx, MS_MEAN, l, MS_ALL, 0, out));
done:
  RELEASE(logits, l);
  return st;
}

static int mlp_value(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  const mlp *m = ud;
  return mean_loss(ctx, m, w, m->X, m->y, out);
}

/*
 * The gradient of the mean loss over the rows of X (onehot: their labels), back-propagated by
 * hand: dz_L = (softmax(z_L) - onehot) / n; dW_l = a_{l-1}^T dz_l, db_l = the column sums of
 * dz_l, dz_{l-1} = (dz_l W_l^T) * [z_{l-1} > 0]. Why not reverse mode over the value: the
 * tape's rule for a view of w scatters into a zero vector of w's full length, once per
 * layer parameter, which for a 784-100-20-10 network costs more than the products. Here the
 * pieces are joined by one concatenation. Every step is a differentiable engine operation
 * (the ReLU mask is a comparison, a constant), so tapes and forward levels see through it:
 * meta-gradients through unrolled steps and the derived hvp work as before.
 */
static int mlp_grad_rows(ms_ctx *ctx, const mlp *m, ms_tensor *w, ms_tensor *X, ms_tensor *onehot,
                         ms_tensor **out) {
  int L = m->nlayers - 1, st = MS_OK;
  const int64_t *ly = m->layers;
  double n = (double)ms_tensor_dim(X, 0);
  ms_tensor *a[MS_MLP_MAXLAYERS] = {NULL}, *z[MS_MLP_MAXLAYERS] = {NULL};
  ms_tensor *W[MS_MLP_MAXLAYERS] = {NULL}, *b[MS_MLP_MAXLAYERS] = {NULL};
  ms_tensor *parts[2 * MS_MLP_MAXLAYERS] = {NULL};
  ms_tensor *dz = NULL, *ls = NULL, *sm = NULL, *diff = NULL, *at = NULL, *dw = NULL, *wt = NULL;
  ms_tensor *da = NULL, *mask = NULL;
  a[0] = ms_tensor_retain(X);
  int64_t off = 0;
  for (int l = 1; l <= L; l++) {
    TRY(layer_params(ctx, ly, l, off, w, &W[l], &b[l]));
    TRY(dense(ctx, a[l - 1], W[l], b[l], &z[l]));
    if (l < L) TRY(ms_unary(ctx, MS_RELU, z[l], &a[l]));
    off += (ly[l - 1] + 1) * ly[l];
  }
  TRY(ms_log_softmax(ctx, z[L], 1, &ls));
  TRY(ms_unary(ctx, MS_EXP, ls, &sm));
  TRY(ms_binary(ctx, MS_SUB, sm, onehot, &diff));
  TRY(ms_binary_scalar(ctx, MS_DIV, diff, n, 0, &dz));
  for (int l = L; l >= 1; l--) {
    int64_t nw = ly[l - 1] * ly[l];
    TRY(ms_tensor_transpose(ctx, a[l - 1], 0, 1, &at));
    TRY(ms_matmul(ctx, at, dz, &dw));
    TRY(ms_tensor_reshape(ctx, dw, 1, &nw, &parts[2 * (l - 1)]));
    TRY(ms_reduce(ctx, MS_SUM, dz, 0, 0, &parts[2 * (l - 1) + 1]));
    if (l > 1) {
      TRY(ms_tensor_transpose(ctx, W[l], 0, 1, &wt));
      TRY(ms_matmul(ctx, dz, wt, &da));
      TRY(ms_binary_scalar(ctx, MS_GT, z[l - 1], 0.0, 0, &mask));
      ms_tensor_release(dz);
      dz = NULL;
      TRY(ms_binary(ctx, MS_MUL, da, mask, &dz));
    }
    DROP(&at, &dw, &wt, &da, &mask);
  }
  TRY(ms_tensor_cat(ctx, 2 * L, parts, 0, out));
done:
  for (int l = 0; l <= L; l++) RELEASE(a[l], z[l], W[l], b[l]);
  for (int k = 0; k < 2 * L; k++) ms_tensor_release(parts[k]);
  RELEASE(dz, ls, sm, diff, at, dw, wt, da, mask);
  return st;
}

static int mlp_grad(ms_ctx *ctx, void *ud, ms_tensor *w, ms_tensor **out) {
  const mlp *m = ud;
  return mlp_grad_rows(ctx, m, w, m->X, m->onehot, out);
}

/* The rows idx of X and onehot (untracked: a batch's data are constants of the step). */
static int mlp_grad_batch(ms_ctx *ctx, void *ud, ms_tensor *w, int64_t k, const int64_t *idx,
                          ms_tensor **out) {
  const mlp *m = ud;
  int64_t D = m->layers[0], C = m->layers[m->nlayers - 1], xs[2] = {k, D}, os[2] = {k, C};
  ms_tensor *Xb = NULL, *Ob = NULL;
  int st = ms_tensor_empty(ctx, 2, xs, &Xb);
  if (st == MS_OK) st = ms_tensor_empty(ctx, 2, os, &Ob);
  if (st == MS_OK) {
    const double *x = ms_tensor_data(m->X), *o = ms_tensor_data(m->onehot);
    double *xo = ms_tensor_data(Xb), *oo = ms_tensor_data(Ob);
    for (int64_t r = 0; r < k; r++) {
      memcpy(xo + r * D, x + idx[r] * D, (size_t)D * sizeof *x);
      memcpy(oo + r * C, o + idx[r] * C, (size_t)C * sizeof *o);
    }
    st = mlp_grad_rows(ctx, m, w, Xb, Ob, out);
  }
  ms_tensor_release(Xb);
  ms_tensor_release(Ob);
  return st;
}

int ms_objective_mlp(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *X,
                     const ms_tensor *y, ms_objective **out) {
  *out = NULL;
  int64_t P;
  int st = ms_mlp_size(ctx, layers, nlayers, &P);
  if (st == MS_OK) st = check_X(ctx, "objective_mlp", X, layers[0]);
  if (st == MS_OK && ms_tensor_dim(X, 0) < 1)
    st = ms_ctx_fail(ctx, MS_ESHAPE, "objective_mlp: X has no rows");
  if (st == MS_OK) st = check_y(ctx, "objective_mlp", y, ms_tensor_dim(X, 0), layers[nlayers - 1]);
  if (st) return st;
  mlp *m = ms_ctx_alloc(ctx, sizeof *m);
  if (m == NULL) return MS_ENOMEM;
  m->ctx = ctx;
  m->nlayers = nlayers;
  memcpy(m->layers, layers, (size_t)nlayers * sizeof *layers);
  m->X = m->y = m->onehot = NULL;
  /* contiguous copies: grad_batch gathers rows from the raw data */
  st = ms_tensor_copy(ctx, X, &m->X);
  if (st == MS_OK) st = ms_stop_gradient(ctx, (ms_tensor *)y, &m->y);
  int64_t n = ms_tensor_dim(X, 0), C = layers[nlayers - 1], os[2] = {n, C};
  if (st == MS_OK) st = ms_tensor_zeros(ctx, 2, os, &m->onehot);
  if (st == MS_OK) {
    const double *yd = ms_tensor_data(m->y);
    double *o = ms_tensor_data(m->onehot);
    for (int64_t i = 0; i < n; i++) o[i * C + (int64_t)yd[i]] = 1.0;
  }
  if (st) {
    mlp_free(m);
    return st;
  }
  ms_objective_def def = {"mlp", P, mlp_value, mlp_grad, NULL, mlp_free, m, n, mlp_grad_batch};
  st = ms_objective_new(ctx, &def, out);
  if (st) mlp_free(m);
  return st;
}

int ms_mlp_accuracy(ms_ctx *ctx, const int64_t *layers, int nlayers, const ms_tensor *w,
                    const ms_tensor *X, const ms_tensor *y, double *acc) {
  *acc = NAN;
  int64_t P;
  int st = ms_mlp_size(ctx, layers, nlayers, &P);
  if (st == MS_OK) st = check_w(ctx, "mlp_accuracy", w, P);
  if (st == MS_OK) st = check_X(ctx, "mlp_accuracy", X, layers[0]);
  if (st == MS_OK) st = check_y(ctx, "mlp_accuracy", y, ms_tensor_dim(X, 0), layers[nlayers - 1]);
  if (st) return st;
  int64_t n = ms_tensor_dim(X, 0), k = layers[nlayers - 1];
  if (n == 0) return ms_ctx_fail(ctx, MS_ESHAPE, "mlp_accuracy: X has no rows");
  ms_tensor *wc = NULL, *Xc = NULL, *logits = NULL;
  TRY(ms_stop_gradient(ctx, (ms_tensor *)w, &wc));
  TRY(ms_stop_gradient(ctx, (ms_tensor *)X, &Xc));
  TRY(mlp_forward(ctx, layers, nlayers, wc, Xc, &logits));
  const double *z = ms_tensor_data(logits), *yd = ms_tensor_data(y);
  const int64_t ys = ms_tensor_strides(y)[0];
  int64_t right = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t best = 0;
    for (int64_t j = 1; j < k; j++)
      if (z[i * k + j] > z[i * k + best]) best = j;
    right += (double)best == yd[i * ys];
  }
  *acc = (double)right / (double)n;
done:
  RELEASE(wc, Xc, logits);
  return st;
}
