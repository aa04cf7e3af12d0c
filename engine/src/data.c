/*
 * Data (data.h): IDX files through zlib, Fashion-MNIST, a synthetic image set and tasks.
 *
 * The IDX reader allocates the result tensor from the header and converts the bytes in
 * chunks, so a 47 MB image file never sits in memory twice as bytes. gzread reads plain
 * files unchanged, which is why one path serves both the .gz files Debian ships and
 * uncompressed ones.
 */
#include "metastep/data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define IDX_CHUNK 65536

/* Largest element count we accept: 2^40 doubles is already 8 TiB. */
#define IDX_MAX_NUMEL ((int64_t)1 << 40)

/* Reads exactly n bytes; returns the count read (< n at end of file), or -1 on error. */
static int64_t read_full(gzFile f, unsigned char *buf, int64_t n) {
  int64_t got = 0;
  while (got < n) {
    int64_t want = n - got > IDX_CHUNK ? IDX_CHUNK : n - got;
    int r = gzread(f, buf + got, (unsigned)want);
    if (r < 0) return -1;
    if (r == 0) break;
    got += r;
  }
  return got;
}

static int gz_fail(ms_ctx *ctx, gzFile f, const char *path, const char *what) {
  int errnum = 0;
  const char *msg = gzerror(f, &errnum);
  if (errnum == Z_ERRNO) msg = strerror(errno);
  return ms_ctx_fail(ctx, MS_EIO, "idx: '%s': read error while reading %s: %s", path, what, msg);
}

static int idx_read(ms_ctx *ctx, gzFile f, const char *path, ms_tensor **out) {
  unsigned char head[4], dimb[4 * MS_MAXDIM];
  int64_t got = read_full(f, head, 4);
  if (got < 0) return gz_fail(ctx, f, path, "the header");
  if (got < 4)
    return ms_ctx_fail(ctx, MS_EIO, "idx: '%s': truncated header (%lld of 4 bytes)", path,
                       (long long)got);
  if (head[0] != 0 || head[1] != 0)
    return ms_ctx_fail(ctx, MS_EIO,
                       "idx: '%s': bad magic number %02x %02x %02x %02x (expected 00 00 08 <ndim>;"
                       " not an IDX file)",
                       path, head[0], head[1], head[2], head[3]);
  if (head[2] != 0x08)
    return ms_ctx_fail(ctx, MS_EIO,
                       "idx: '%s': data type 0x%02x is not supported (only 0x08, unsigned byte)",
                       path, head[2]);
  int ndim = head[3];
  if (ndim < 1 || ndim > MS_MAXDIM)
    return ms_ctx_fail(ctx, MS_EIO, "idx: '%s': %d dimensions, expected 1..%d", path, ndim,
                       MS_MAXDIM);
  got = read_full(f, dimb, 4 * ndim);
  if (got < 0) return gz_fail(ctx, f, path, "the dimensions");
  if (got < 4 * ndim)
    return ms_ctx_fail(ctx, MS_EIO, "idx: '%s': truncated header (%lld of %d dimension bytes)",
                       path, (long long)got, 4 * ndim);
  int64_t shape[MS_MAXDIM], numel = 1;
  for (int i = 0; i < ndim; i++) {
    const unsigned char *p = dimb + 4 * i;
    shape[i] = (int64_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                         (uint32_t)p[3]);
    if (shape[i] != 0 && numel > IDX_MAX_NUMEL / shape[i])
      return ms_ctx_fail(ctx, MS_EIO,
                         "idx: '%s': dimension overflow (dimension %d is %lld; more than 2^40 "
                         "elements in all)",
                         path, i + 1, (long long)shape[i]);
    numel *= shape[i];
  }
  ms_tensor *t = NULL;
  int st = ms_tensor_empty(ctx, ndim, shape, &t);
  if (st) return st;
  unsigned char *buf = ms_ctx_alloc(ctx, IDX_CHUNK);
  if (buf == NULL) {
    ms_tensor_release(t);
    return MS_ENOMEM;
  }
  double *d = ms_tensor_data(t);
  int64_t done = 0;
  while (st == MS_OK && done < numel) {
    int64_t want = numel - done > IDX_CHUNK ? IDX_CHUNK : numel - done;
    got = read_full(f, buf, want);
    if (got < 0) {
      st = gz_fail(ctx, f, path, "the data");
    } else if (got < want) {
      char b[MS_SHAPE_STRLEN];
      st = ms_ctx_fail(ctx, MS_EIO, "idx: '%s': truncated data (%lld of %lld bytes for shape %s)",
                       path, (long long)(done + got), (long long)numel,
                       ms_shape_str(ndim, shape, b, sizeof b));
    } else {
      for (int64_t k = 0; k < got; k++) d[done + k] = (double)buf[k];
      done += got;
    }
  }
  if (st == MS_OK) {
    got = read_full(f, buf, 1);
    if (got != 0)
      st = got < 0 ? gz_fail(ctx, f, path, "past the data")
                   : ms_ctx_fail(ctx, MS_EIO,
                                 "idx: '%s': extra bytes after the %lld data bytes the header "
                                 "announces",
                                 path, (long long)numel);
  }
  ms_ctx_dealloc(ctx, buf, IDX_CHUNK);
  if (st) {
    ms_tensor_release(t);
    return st;
  }
  *out = t;
  return MS_OK;
}

int ms_idx_load(ms_ctx *ctx, const char *path, ms_tensor **out) {
  *out = NULL;
  if (path == NULL) return ms_ctx_fail(ctx, MS_EARG, "idx: path is NULL");
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (f == NULL) {
    const char *why = errno ? strerror(errno) : "out of memory";
    return ms_ctx_fail(ctx, errno ? MS_EIO : MS_ENOMEM, "idx: cannot open '%s': %s", path, why);
  }
  int st = idx_read(ctx, f, path, out);
  gzclose(f);
  return st;
}

/* ---- Fashion-MNIST ---- */

/* 1 if path can be opened for reading. */
static int readable(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  fclose(f);
  return 1;
}

/* Finds dir/base.gz or dir/base into path; MS_EIO naming the package when neither exists. */
static int find_file(ms_ctx *ctx, const char *dir, const char *base, char *path, size_t size) {
  int n = snprintf(path, size, "%s/%s.gz", dir, base);
  if (n < 0 || (size_t)n >= size)
    return ms_ctx_fail(ctx, MS_EARG, "fashion_mnist: directory name too long (%zu bytes)",
                       strlen(dir));
  if (readable(path)) return MS_OK;
  snprintf(path, size, "%s/%s", dir, base);
  if (readable(path)) return MS_OK;
  return ms_ctx_fail(ctx, MS_EIO,
                     "fashion_mnist: cannot read '%s/%s.gz' (%s); install the Debian package "
                     "dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or pass "
                     "the directory holding the IDX files",
                     dir, base, strerror(errno));
}

int ms_fashion_mnist_load(ms_ctx *ctx, const char *dir, const char *split, ms_tensor **images,
                          ms_tensor **labels) {
  *images = *labels = NULL;
  if (dir == NULL) dir = MS_FASHION_MNIST_DIR;
  if (split == NULL) return ms_ctx_fail(ctx, MS_EARG, "fashion_mnist: split is NULL");
  const char *prefix;
  if (strcmp(split, "train") == 0)
    prefix = "train";
  else if (strcmp(split, "test") == 0)
    prefix = "t10k";
  else
    return ms_ctx_fail(ctx, MS_EARG,
                       "fashion_mnist: split must be \"train\" or \"test\", got \"%s\"", split);
  char ipath[4096], lpath[4096], base[64];
  snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
  int st = find_file(ctx, dir, base, ipath, sizeof ipath);
  if (st) return st;
  snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
  st = find_file(ctx, dir, base, lpath, sizeof lpath);
  if (st) return st;
  ms_tensor *raw = NULL, *lab = NULL, *flat = NULL;
  st = ms_idx_load(ctx, ipath, &raw);
  if (st == MS_OK) st = ms_idx_load(ctx, lpath, &lab);
  if (st == MS_OK) {
    char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
    if (ms_tensor_ndim(raw) != 3 || ms_tensor_ndim(lab) != 1 ||
        ms_tensor_dim(raw, 0) != ms_tensor_dim(lab, 0))
      st = ms_ctx_fail(
          ctx, MS_EIO,
          "fashion_mnist: '%s' has shape %s and '%s' has shape %s; expected [n,28,28] "
          "and [n]",
          ipath, ms_shape_str(ms_tensor_ndim(raw), ms_tensor_shape(raw), b1, sizeof b1), lpath,
          ms_shape_str(ms_tensor_ndim(lab), ms_tensor_shape(lab), b2, sizeof b2));
  }
  if (st == MS_OK) {
    const double *l = ms_tensor_data(lab);
    for (int64_t i = 0; i < ms_tensor_numel(lab); i++) {
      if (l[i] > 9) {
        st =
            ms_ctx_fail(ctx, MS_EIO, "fashion_mnist: '%s': label %g of example %lld is not in 0..9",
                        lpath, l[i], (long long)i + 1);
        break;
      }
    }
  }
  if (st == MS_OK) {
    int64_t shape[2] = {ms_tensor_dim(raw, 0), ms_tensor_dim(raw, 1) * ms_tensor_dim(raw, 2)};
    st = ms_tensor_view(ctx, raw, 2, shape, &flat);
  }
  if (st == MS_OK) {
    /* in place: raw is ours alone, and 1/255 scaling in a loop avoids a second 376 MB copy */
    double *d = ms_tensor_data(flat);
    for (int64_t i = 0; i < ms_tensor_numel(flat); i++) d[i] /= 255.0;
  }
  ms_tensor_release(raw);
  if (st) {
    ms_tensor_release(flat);
    ms_tensor_release(lab);
    return st;
  }
  *images = flat;
  *labels = lab;
  return MS_OK;
}

/* ---- synthetic images ---- */

int ms_synthetic_images(ms_ctx *ctx, uint64_t seed, int64_t n, int64_t side, int classes,
                        ms_tensor **images, ms_tensor **labels) {
  *images = *labels = NULL;
  if (n < 1)
    return ms_ctx_fail(ctx, MS_EARG, "synthetic_images: n must be >= 1, got %lld", (long long)n);
  if (side < 2 || side > 64)
    return ms_ctx_fail(ctx, MS_EARG, "synthetic_images: side must be in 2..64, got %lld",
                       (long long)side);
  if (classes < 2 || classes > 100)
    return ms_ctx_fail(ctx, MS_EARG, "synthetic_images: classes must be in 2..100, got %d",
                       classes);
  int64_t D = side * side;
  int64_t pshape[2] = {classes, D}, ishape[2] = {n, D};
  ms_tensor *proto = NULL, *X = NULL, *y = NULL;
  int st = ms_tensor_zeros(ctx, 2, pshape, &proto);
  if (st == MS_OK) st = ms_tensor_empty(ctx, 2, ishape, &X);
  if (st == MS_OK) st = ms_tensor_empty(ctx, 1, &n, &y);
  if (st) {
    ms_tensor_release(proto);
    ms_tensor_release(X);
    return st;
  }
  ms_rng rng;
  ms_rng_seed(&rng, seed);
  /* prototypes: three Gaussian blobs each, at random centres with random widths, peak 1 */
  double *p = ms_tensor_data(proto);
  for (int c = 0; c < classes; c++) {
    double *pc = p + c * D, peak = 0;
    for (int blob = 0; blob < 3; blob++) {
      double cx = ms_rng_uniform(&rng) * (double)side, cy = ms_rng_uniform(&rng) * (double)side;
      double s = (0.12 + 0.2 * ms_rng_uniform(&rng)) * (double)side;
      for (int64_t r = 0; r < side; r++)
        for (int64_t q = 0; q < side; q++) {
          double dx = (double)q + 0.5 - cx, dy = (double)r + 0.5 - cy;
          pc[r * side + q] += exp(-(dx * dx + dy * dy) / (2 * s * s));
        }
    }
    for (int64_t j = 0; j < D; j++) peak = fmax(peak, pc[j]);
    for (int64_t j = 0; j < D; j++) pc[j] /= peak;
  }
  double *x = ms_tensor_data(X), *l = ms_tensor_data(y);
  for (int64_t i = 0; i < n; i++) {
    int c = (int)(ms_rng_uniform(&rng) * classes);
    int other = (c + 1 + (int)(ms_rng_uniform(&rng) * (classes - 1))) % classes;
    double mix = 0.4 * ms_rng_uniform(&rng);
    const double *pc = p + c * D, *po = p + other * D;
    double *xi = x + i * D;
    for (int64_t j = 0; j < D; j++) {
      double v = (1 - mix) * pc[j] + mix * po[j] + 0.25 * ms_rng_normal(&rng);
      xi[j] = v < 0 ? 0 : (v > 1 ? 1 : v);
    }
    l[i] = (double)c;
  }
  ms_tensor_release(proto);
  *images = X;
  *labels = y;
  return MS_OK;
}

/* ---- tasks ---- */

/* Rows perm[from..from+m-1] of X ([N,D]) and y into fresh [m,D] and [m] tensors. */
static int take_rows(ms_ctx *ctx, const ms_tensor *X, const double *y, const int64_t *perm,
                     int64_t from, int64_t m, ms_tensor **Xo, ms_tensor **yo) {
  int64_t D = ms_tensor_dim(X, 1);
  int64_t xs[2] = {m, D};
  int st = ms_tensor_empty(ctx, 2, xs, Xo);
  if (st == MS_OK) st = ms_tensor_empty(ctx, 1, &m, yo);
  if (st) return st;
  const double *x = ms_tensor_data(X);
  double *xo = ms_tensor_data(*Xo), *yy = ms_tensor_data(*yo);
  for (int64_t k = 0; k < m; k++) {
    if (D > 0) memcpy(xo + k * D, x + perm[from + k] * D, (size_t)D * sizeof *x);
    yy[k] = y[perm[from + k]];
  }
  return MS_OK;
}

int ms_image_task(ms_ctx *ctx, const ms_tensor *images, const ms_tensor *labels, int64_t n_train,
                  int64_t n_valid, double label_noise, uint64_t seed, ms_tensor **Xtr,
                  ms_tensor **ytr, ms_tensor **Xva, ms_tensor **yva) {
  char b1[MS_SHAPE_STRLEN], b2[MS_SHAPE_STRLEN];
  *Xtr = *ytr = *Xva = *yva = NULL;
  if (images == NULL || labels == NULL)
    return ms_ctx_fail(ctx, MS_EARG, "image_task: images and labels are required");
  if (ms_tensor_ndim(images) != 2 || ms_tensor_ndim(labels) != 1 ||
      ms_tensor_dim(labels, 0) != ms_tensor_dim(images, 0))
    return ms_ctx_fail(
        ctx, MS_ESHAPE, "image_task: expected images [N,D] and labels [N], got %s and %s",
        ms_shape_str(ms_tensor_ndim(images), ms_tensor_shape(images), b1, sizeof b1),
        ms_shape_str(ms_tensor_ndim(labels), ms_tensor_shape(labels), b2, sizeof b2));
  int64_t N = ms_tensor_dim(images, 0);
  if (n_train < 1)
    return ms_ctx_fail(ctx, MS_EARG, "image_task: n_train must be >= 1, got %lld",
                       (long long)n_train);
  if (n_valid < 0)
    return ms_ctx_fail(ctx, MS_EARG, "image_task: n_valid must be >= 0, got %lld",
                       (long long)n_valid);
  if (n_train > N - n_valid)
    return ms_ctx_fail(ctx, MS_EARG,
                       "image_task: n_train + n_valid = %lld exceeds the %lld images available",
                       (long long)(n_train + n_valid), (long long)N);
  if (!(label_noise >= 0 && label_noise <= 1))
    return ms_ctx_fail(ctx, MS_EARG, "image_task: label_noise must be in [0, 1], got %g",
                       label_noise);
  ms_tensor *X = NULL, *y = NULL;
  int st = ms_tensor_contiguous(ctx, images, &X);
  if (st == MS_OK) st = ms_tensor_contiguous(ctx, labels, &y);
  int64_t *perm = NULL;
  size_t permbytes = (size_t)N * sizeof *perm;
  double K = 0;
  if (st == MS_OK) {
    const double *l = ms_tensor_data(y);
    for (int64_t i = 0; i < N && st == MS_OK; i++) {
      if (!(l[i] >= 0 && l[i] == floor(l[i]) && l[i] < 1e9))
        st = ms_ctx_fail(ctx, MS_EARG,
                         "image_task: labels must be integers >= 0, got %g at index %lld", l[i],
                         (long long)i + 1);
      else if (l[i] + 1 > K)
        K = l[i] + 1;
    }
  }
  if (st == MS_OK && (perm = ms_ctx_alloc(ctx, permbytes)) == NULL) st = MS_ENOMEM;
  if (st == MS_OK) {
    ms_rng rng;
    ms_rng_seed(&rng, seed);
    /* a partial Fisher-Yates shuffle: only the first n_train + n_valid places are drawn */
    for (int64_t i = 0; i < N; i++) perm[i] = i;
    for (int64_t i = 0; i < n_train + n_valid; i++) {
      int64_t j = i + (int64_t)(ms_rng_uniform(&rng) * (double)(N - i));
      int64_t tmp = perm[i];
      perm[i] = perm[j];
      perm[j] = tmp;
    }
    const double *l = ms_tensor_data(y);
    st = take_rows(ctx, X, l, perm, 0, n_train, Xtr, ytr);
    if (st == MS_OK) st = take_rows(ctx, X, l, perm, n_train, n_valid, Xva, yva);
    if (st == MS_OK && label_noise > 0) {
      ms_tensor *ys[2] = {*ytr, *yva};
      for (int s = 0; s < 2; s++) {
        double *yy = ms_tensor_data(ys[s]);
        for (int64_t k = 0; k < ms_tensor_numel(ys[s]); k++) {
          double u = ms_rng_uniform(&rng), c = floor(ms_rng_uniform(&rng) * K);
          if (u < label_noise) yy[k] = c;
        }
      }
    }
  }
  if (perm) ms_ctx_dealloc(ctx, perm, permbytes);
  ms_tensor_release(X);
  ms_tensor_release(y);
  if (st) {
    ms_tensor_release(*Xtr);
    ms_tensor_release(*ytr);
    ms_tensor_release(*Xva);
    ms_tensor_release(*yva);
    *Xtr = *ytr = *Xva = *yva = NULL;
  }
  return st;
}
