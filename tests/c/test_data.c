/*
 * Data (engine/src/data.c): IDX files written here byte by byte (gzip through zlib, and
 * plain), loaded back and compared element by element; every malformed file (missing,
 * truncated header or data, bad magic, unsupported type, dimension overflow, extra bytes)
 * gives its MS_EIO message naming the path; Fashion-MNIST from a directory of small files
 * written here, the message naming the Debian package when the files are absent, and the
 * installed package's test split (10000 images, 1000 per class: the published counts); the
 * synthetic set reproduced from its seed; tasks: disjoint subsets traced back to the source
 * rows, and label noise at the rate asked for.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "metastep/data.h"
#include "metastep/metastep.h"

static ms_ctx *ctx;
static char dir[256];

#define OK(call) CHECK_OK_OR_OUT(ctx, call)

static void path_of(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", dir, name);
}

/* An IDX header for unsigned bytes of the given shape. Returns its length. */
static size_t header(unsigned char *h, int ndim, const uint32_t *shape) {
  h[0] = h[1] = 0;
  h[2] = 0x08;
  h[3] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++) {
    h[4 + 4 * i] = (unsigned char)(shape[i] >> 24);
    h[5 + 4 * i] = (unsigned char)(shape[i] >> 16);
    h[6 + 4 * i] = (unsigned char)(shape[i] >> 8);
    h[7 + 4 * i] = (unsigned char)shape[i];
  }
  return 4 + 4 * (size_t)ndim;
}

/* Writes two byte ranges to path, gzip-compressed or plain. */
static int write_file(const char *path, int gz, const unsigned char *a, size_t na,
                      const unsigned char *b, size_t nb) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    if (f == NULL) return 0;
    int ok = (na == 0 || gzwrite(f, a, (unsigned)na) == (int)na) &&
             (nb == 0 || gzwrite(f, b, (unsigned)nb) == (int)nb);
    return gzclose(f) == Z_OK && ok;
  }
  FILE *f = fopen(path, "wb");
  if (f == NULL) return 0;
  int ok = fwrite(a, 1, na, f) == na && (nb == 0 || fwrite(b, 1, nb, f) == nb);
  return fclose(f) == 0 && ok;
}

static void test_idx_roundtrip(void) {
  uint32_t shape[3] = {3, 5, 7};
  unsigned char h[16], data[105];
  for (int i = 0; i < 105; i++) data[i] = (unsigned char)((i * 37 + 11) % 256);
  size_t hn = header(h, 3, shape);
  for (int gz = 0; gz < 2; gz++) {
    char path[512];
    path_of(path, sizeof path, gz ? "a.idx.gz" : "a.idx");
    CHECK(write_file(path, gz, h, hn, data, sizeof data));
    ms_tensor *t = NULL;
    OK(ms_idx_load(ctx, path, &t));
    CHECK(ms_tensor_ndim(t) == 3 && ms_tensor_dim(t, 0) == 3 && ms_tensor_dim(t, 1) == 5 &&
          ms_tensor_dim(t, 2) == 7);
    const double *d = ms_tensor_data(t);
    int same = 1;
    for (int i = 0; i < 105; i++) same &= d[i] == (double)data[i];
    CHECK(same);
  out:
    ms_tensor_release(t);
  }
}

/* A file of 70000 bytes crosses the reader's 64 KiB chunks. */
static void test_idx_large(void) {
  enum { N = 70000 };
  uint32_t shape[1] = {N};
  unsigned char h[8];
  unsigned char *data = malloc(N);
  ms_tensor *t = NULL;
  char path[512];
  if (data == NULL) return;
  for (int i = 0; i < N; i++) data[i] = (unsigned char)((i * 7919u) >> 3);
  path_of(path, sizeof path, "big.gz");
  CHECK(write_file(path, 1, h, header(h, 1, shape), data, N));
  OK(ms_idx_load(ctx, path, &t));
  CHECK(ms_tensor_ndim(t) == 1 && ms_tensor_dim(t, 0) == N);
  const double *d = ms_tensor_data(t);
  int same = 1;
  for (int i = 0; i < N; i++) same &= d[i] == (double)data[i];
  CHECK(same);
  {
    /* the gzip stream cut in half: the truncation is reported, not a short tensor */
    char cut[512];
    path_of(cut, sizeof cut, "cut.gz");
    FILE *f = fopen(path, "rb");
    unsigned char *gz = malloc(N);
    size_t len = f && gz ? fread(gz, 1, N, f) : 0;
    if (f) fclose(f);
    CHECK(len > 100 && write_file(cut, 0, gz, len / 2, NULL, 0));
    free(gz);
    ms_tensor *u = NULL;
    CHECK_FAILS(ctx, ms_idx_load(ctx, cut, &u), MS_EIO, "truncated data (");
    CHECK(u == NULL && strstr(ms_ctx_error(ctx), cut) != NULL);
  }
out:
  ms_tensor_release(t);
  free(data);
}

/* Loading the file must fail with MS_EIO and a message holding the path and `msg`. */
static void bad_file(const char *name, int gz, const unsigned char *a, size_t na,
                     const unsigned char *b, size_t nb, const char *msg) {
  char path[512];
  path_of(path, sizeof path, name);
  CHECK(write_file(path, gz, a, na, b, nb));
  ms_tensor *t = NULL;
  CHECK_FAILS(ctx, ms_idx_load(ctx, path, &t), MS_EIO, msg);
  CHECK(t == NULL);
  CHECK(strstr(ms_ctx_error(ctx), path) != NULL);
}

static void test_idx_errors(void) {
  char path[512];
  ms_tensor *t = NULL;
  path_of(path, sizeof path, "missing.gz");
  CHECK_FAILS(ctx, ms_idx_load(ctx, path, &t), MS_EIO, "cannot open");
  CHECK(strstr(ms_ctx_error(ctx), path) && strstr(ms_ctx_error(ctx), "No such file"));
  CHECK_FAILS(ctx, ms_idx_load(ctx, NULL, &t), MS_EARG, "idx: path is NULL");

  uint32_t shape[2] = {4, 6};
  unsigned char h[12], data[24] = {0};
  size_t hn = header(h, 2, shape);
  bad_file("trunc_data.gz", 1, h, hn, data, 23, "truncated data (23 of 24 bytes for shape [4,6])");
  bad_file("trunc_plain", 0, h, hn, data, 10, "truncated data (10 of 24 bytes");
  bad_file("trunc_head.gz", 1, h, 6, NULL, 0, "truncated header (2 of 8 dimension bytes)");
  bad_file("tiny.gz", 1, h, 3, NULL, 0, "truncated header (3 of 4 bytes)");
  bad_file("empty.gz", 1, h, 0, NULL, 0, "truncated header (0 of 4 bytes)");
  /* the data plus one byte more */
  unsigned char more[25] = {0};
  bad_file("extra2.gz", 1, h, hn, more, 25, "extra bytes after the 24 data bytes");
  unsigned char magic[12];
  memcpy(magic, h, hn);
  magic[0] = 0x1f;
  bad_file("magic.gz", 1, magic, hn, data, 24, "bad magic number 1f 00 08 02");
  magic[0] = 0;
  magic[2] = 0x0D;
  bad_file("float.gz", 1, magic, hn, data, 24, "data type 0x0d is not supported");
  magic[2] = 0x08;
  magic[3] = 0;
  bad_file("nodim.gz", 1, magic, 4, NULL, 0, "0 dimensions, expected 1..8");
  uint32_t huge[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 3};
  unsigned char hh[16];
  bad_file("huge.gz", 1, hh, header(hh, 3, huge), NULL, 0, "dimension overflow (dimension 2");
  /* a plain file that is not gzip and not IDX either */
  const unsigned char text[] = "hello, world";
  bad_file("text.txt", 0, text, sizeof text - 1, NULL, 0, "bad magic number 68 65 6c 6c");
}

/* A Fashion-MNIST directory of n images written here: pixel (i, j) = (i + 3 j) % 256. */
static void write_fashion(const char *sub, const char *prefix, uint32_t n, int bad_label) {
  char path[512], name[128];
  unsigned char h[16];
  uint32_t ishape[3] = {n, 28, 28}, lshape[1] = {n};
  unsigned char *px = malloc((size_t)n * 784), lab[16];
  if (px == NULL) return;
  for (uint32_t i = 0; i < n; i++)
    for (int j = 0; j < 784; j++) px[i * 784 + j] = (unsigned char)((i + 3 * j) % 256);
  for (uint32_t i = 0; i < n && i < 16; i++) lab[i] = (unsigned char)((i * 3) % 10);
  if (bad_label) lab[n - 1] = 10;
  snprintf(name, sizeof name, "%s/%s-images-idx3-ubyte.gz", sub, prefix);
  path_of(path, sizeof path, name);
  CHECK(write_file(path, 1, h, header(h, 3, ishape), px, (size_t)n * 784));
  snprintf(name, sizeof name, "%s/%s-labels-idx1-ubyte.gz", sub, prefix);
  path_of(path, sizeof path, name);
  CHECK(write_file(path, 1, h, header(h, 1, lshape), lab, n));
  free(px);
}

static void test_fashion(void) {
  char sub[512];
  ms_tensor *X = NULL, *y = NULL;
  path_of(sub, sizeof sub, "fm");
  CHECK(mkdir(sub, 0700) == 0);
  write_fashion("fm", "t10k", 5, 0);
  OK(ms_fashion_mnist_load(ctx, sub, "test", &X, &y));
  CHECK(ms_tensor_ndim(X) == 2 && ms_tensor_dim(X, 0) == 5 && ms_tensor_dim(X, 1) == 784);
  CHECK(ms_tensor_ndim(y) == 1 && ms_tensor_dim(y, 0) == 5);
  const double *x = ms_tensor_data(X), *l = ms_tensor_data(y);
  int same = 1;
  for (int i = 0; i < 5; i++) {
    for (int j = 0; j < 784; j++) same &= x[i * 784 + j] == (double)((i + 3 * j) % 256) / 255.0;
    same &= l[i] == (double)((i * 3) % 10);
  }
  CHECK(same);
  CHECK_DROP(&X, &y);
  /* the train files are absent there: the message names the package */
  CHECK_FAILS(ctx, ms_fashion_mnist_load(ctx, sub, "train", &X, &y), MS_EIO,
              "install the Debian package dataset-fashion-mnist");
  CHECK(strstr(ms_ctx_error(ctx), "train-images-idx3-ubyte.gz") != NULL);
  CHECK(X == NULL && y == NULL);
  CHECK_FAILS(ctx, ms_fashion_mnist_load(ctx, sub, "valid", &X, &y), MS_EARG,
              "split must be \"train\" or \"test\", got \"valid\"");
  write_fashion("fm", "train", 4, 1);
  CHECK_FAILS(ctx, ms_fashion_mnist_load(ctx, sub, "train", &X, &y), MS_EIO,
              "label 10 of example 4 is not in 0..9");
out:
  CHECK_RELEASE(X, y);
}

/* The package's test split: 10000 images, 1000 of each class (the published counts). */
static void test_fashion_installed(void) {
  ms_tensor *X = NULL, *y = NULL;
  OK(ms_fashion_mnist_load(ctx, NULL, "test", &X, &y));
  CHECK(ms_tensor_dim(X, 0) == 10000 && ms_tensor_dim(X, 1) == 784 && ms_tensor_dim(y, 0) == 10000);
  int count[10] = {0};
  const double *l = ms_tensor_data(y), *x = ms_tensor_data(X);
  for (int i = 0; i < 10000; i++) count[(int)l[i]]++;
  int balanced = 1;
  for (int c = 0; c < 10; c++) balanced &= count[c] == 1000;
  CHECK(balanced);
  double lo = 1, hi = 0;
  for (int64_t i = 0; i < 10000 * 784; i++) lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
  CHECK(lo == 0 && hi == 1);
out:
  CHECK_RELEASE(X, y);
}

static void test_synthetic(void) {
  ms_tensor *X1 = NULL, *y1 = NULL, *X2 = NULL, *y2 = NULL, *X3 = NULL, *y3 = NULL;
  OK(ms_synthetic_images(ctx, 7, 500, 8, 4, &X1, &y1));
  OK(ms_synthetic_images(ctx, 7, 500, 8, 4, &X2, &y2));
  OK(ms_synthetic_images(ctx, 8, 500, 8, 4, &X3, &y3));
  CHECK(ms_tensor_dim(X1, 0) == 500 && ms_tensor_dim(X1, 1) == 64 && ms_tensor_dim(y1, 0) == 500);
  double d = -1;
  OK(ms_max_abs_diff(ctx, X1, X2, &d));
  CHECK(d == 0);
  OK(ms_max_abs_diff(ctx, y1, y2, &d));
  CHECK(d == 0);
  OK(ms_max_abs_diff(ctx, X1, X3, &d));
  CHECK(d > 0.1);
  CHECK_DROP(&X3, &y3);
  const double *x = ms_tensor_data(X1), *l = ms_tensor_data(y1);
  int inrange = 1, count[4] = {0};
  for (int i = 0; i < 500 * 64; i++) inrange &= x[i] >= 0 && x[i] <= 1;
  for (int i = 0; i < 500; i++) {
    inrange &= l[i] == floor(l[i]) && l[i] >= 0 && l[i] < 4;
    if (l[i] >= 0 && l[i] < 4) count[(int)l[i]]++;
  }
  CHECK(inrange);
  /* uniform classes: 125 expected each, binomial sd about 9.7 */
  for (int c = 0; c < 4; c++) CHECK(count[c] > 85 && count[c] < 165);
  CHECK_FAILS(ctx, ms_synthetic_images(ctx, 1, 0, 8, 4, &X3, &y3), MS_EARG, "n must be >= 1");
  CHECK_FAILS(ctx, ms_synthetic_images(ctx, 1, 5, 1, 4, &X3, &y3), MS_EARG,
              "side must be in 2..64, got 1");
  CHECK_FAILS(ctx, ms_synthetic_images(ctx, 1, 5, 8, 1, &X3, &y3), MS_EARG,
              "classes must be in 2..100, got 1");
out:
  CHECK_RELEASE(X1, y1, X2, y2, X3, y3);
}

static void test_task(void) {
  enum { N = 3000, D = 3, K = 10 };
  ms_tensor *X = NULL, *y = NULL, *Xt = NULL, *yt = NULL, *Xv = NULL, *yv = NULL;
  int64_t xs[2] = {N, D}, ns = N;
  OK(ms_tensor_empty(ctx, 2, xs, &X));
  OK(ms_tensor_empty(ctx, 1, &ns, &y));
  double *x = ms_tensor_data(X), *l = ms_tensor_data(y);
  /* row i = (i, 2i, -i), label i % K: every row says where it came from */
  for (int i = 0; i < N; i++) x[i * D] = i, x[i * D + 1] = 2 * i, x[i * D + 2] = -i, l[i] = i % K;
  OK(ms_image_task(ctx, X, y, 1000, 1500, 0.0, 42, &Xt, &yt, &Xv, &yv));
  CHECK(ms_tensor_dim(Xt, 0) == 1000 && ms_tensor_dim(Xv, 0) == 1500 &&
        ms_tensor_dim(yv, 0) == 1500);
  static char seen[N];
  memset(seen, 0, sizeof seen);
  int ok = 1, dup = 0;
  ms_tensor *parts[2][2] = {{Xt, yt}, {Xv, yv}};
  for (int s = 0; s < 2; s++) {
    const double *px = ms_tensor_data(parts[s][0]), *py = ms_tensor_data(parts[s][1]);
    for (int64_t k = 0; k < ms_tensor_dim(parts[s][0], 0); k++) {
      int i = (int)px[k * D];
      ok &= i >= 0 && i < N && px[k * D + 1] == 2 * i && px[k * D + 2] == -i && py[k] == i % K;
      if (i >= 0 && i < N) dup += seen[i]++ > 0;
    }
  }
  CHECK(ok);
  CHECK(dup == 0);
  /* the same seed gives the same task; another seed another one */
  ms_tensor *Xt2 = NULL, *yt2 = NULL, *Xv2 = NULL, *yv2 = NULL;
  double dd = -1;
  OK(ms_image_task(ctx, X, y, 1000, 1500, 0.0, 42, &Xt2, &yt2, &Xv2, &yv2));
  OK(ms_max_abs_diff(ctx, Xt, Xt2, &dd));
  CHECK(dd == 0);
  CHECK_DROP(&Xt2, &yt2, &Xv2, &yv2);
  OK(ms_image_task(ctx, X, y, 1000, 1500, 0.0, 43, &Xt2, &yt2, &Xv2, &yv2));
  OK(ms_max_abs_diff(ctx, Xt, Xt2, &dd));
  CHECK(dd > 0);
  CHECK_DROP(&Xt2, &yt2, &Xv2, &yv2, &Xt, &yt, &Xv, &yv);

  /* label noise p: a label is redrawn uniformly with probability p, so it changes with
   * probability p (K - 1) / K = 0.45 for p = 0.5, on both subsets (2500 labels: sd 0.01) */
  OK(ms_image_task(ctx, X, y, 1000, 1500, 0.5, 5, &Xt, &yt, &Xv, &yv));
  int changed = 0, valid = 1;
  for (int s = 0; s < 2; s++) {
    ms_tensor *px = s ? Xv : Xt, *py = s ? yv : yt;
    const double *a = ms_tensor_data(px), *b = ms_tensor_data(py);
    for (int64_t k = 0; k < ms_tensor_dim(px, 0); k++) {
      changed += b[k] != (double)((int)a[k * D] % K);
      valid &= b[k] >= 0 && b[k] < K && b[k] == floor(b[k]);
    }
  }
  CHECK(valid);
  CHECK(fabs(changed / 2500.0 - 0.45) < 0.04);
  CHECK_DROP(&Xt, &yt, &Xv, &yv);
  OK(ms_image_task(ctx, X, y, N, 0, 0.0, 1, &Xt, &yt, &Xv, &yv));
  CHECK(ms_tensor_dim(Xv, 0) == 0 && ms_tensor_dim(Xv, 1) == D && ms_tensor_dim(yv, 0) == 0);
  CHECK_DROP(&Xt, &yt, &Xv, &yv);

  CHECK_FAILS(ctx, ms_image_task(ctx, X, y, 2000, 1001, 0.0, 1, &Xt, &yt, &Xv, &yv), MS_EARG,
              "n_train + n_valid = 3001 exceeds the 3000 images available");
  CHECK_FAILS(ctx, ms_image_task(ctx, X, y, 0, 1, 0.0, 1, &Xt, &yt, &Xv, &yv), MS_EARG,
              "n_train must be >= 1, got 0");
  CHECK_FAILS(ctx, ms_image_task(ctx, X, y, 10, 1, 1.5, 1, &Xt, &yt, &Xv, &yv), MS_EARG,
              "label_noise must be in [0, 1], got 1.5");
  CHECK_FAILS(ctx, ms_image_task(ctx, X, X, 10, 1, 0, 1, &Xt, &yt, &Xv, &yv), MS_ESHAPE,
              "expected images [N,D] and labels [N], got [3000,3] and [3000,3]");
  l[7] = 2.5;
  CHECK_FAILS(ctx, ms_image_task(ctx, X, y, 10, 1, 0, 1, &Xt, &yt, &Xv, &yv), MS_EARG,
              "labels must be integers >= 0, got 2.5 at index 8");
  CHECK(Xt == NULL && yt == NULL && Xv == NULL && yv == NULL);
out:
  CHECK_RELEASE(X, y, Xt, yt, Xv, yv);
}

/* Removes the files this test wrote, then the directories. */
static void cleanup(void) {
  static const char *names[] = {"a.idx",
                                "a.idx.gz",
                                "big.gz",
                                "cut.gz",
                                "trunc_data.gz",
                                "trunc_plain",
                                "trunc_head.gz",
                                "tiny.gz",
                                "empty.gz",
                                "extra2.gz",
                                "magic.gz",
                                "float.gz",
                                "nodim.gz",
                                "huge.gz",
                                "text.txt",
                                "fm/t10k-images-idx3-ubyte.gz",
                                "fm/t10k-labels-idx1-ubyte.gz",
                                "fm/train-images-idx3-ubyte.gz",
                                "fm/train-labels-idx1-ubyte.gz",
                                "fm",
                                NULL};
  char path[512];
  for (int i = 0; names[i]; i++) {
    path_of(path, sizeof path, names[i]);
    remove(path);
  }
  rmdir(dir);
}

/* An allocation failure at every point of the loaders and tasks: MS_ENOMEM, nothing leaked. */
static void test_alloc_failures(void) {
  check_alloc fs = {0, -1, 0};
  ms_ctx *c = ms_ctx_new(check_failing_alloc, &fs);
  char path[512], sub[512];
  path_of(path, sizeof path, "a.idx.gz");
  path_of(sub, sizeof sub, "fm");
  size_t base = ms_ctx_bytes(c);
  int ok = 0, wrong = 0, leaks = 0;
  long k = 0;
  for (; k < 10000 && !ok; k++) {
    fs.n = 0, fs.fail_at = k;
    ms_tensor *t = NULL, *X = NULL, *y = NULL, *a = NULL, *b = NULL, *d = NULL, *e = NULL;
    int st = ms_idx_load(c, path, &t);
    if (st == MS_OK) st = ms_fashion_mnist_load(c, sub, "test", &X, &y);
    if (st == MS_OK) st = ms_image_task(c, X, y, 2, 2, 0.5, 1, &a, &b, &d, &e);
    CHECK_RELEASE(t, X, y, a, b, d, e);
    if (st == MS_OK)
      ok = 1;
    else if (st != MS_ENOMEM) {
      if (!wrong) fprintf(stderr, "failing allocation %ld gave %d: %s\n", k, st, ms_ctx_error(c));
      wrong++;
    }
    if (check_sweep_leaked(c, base, 0, k, &leaks)) break;
  }
  fs.fail_at = -1;
  CHECK(ok);
  CHECK(k > 10);
  CHECK(wrong == 0);
  CHECK(leaks == 0);
  check_ctx_free(c);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/metastep_test_data_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  static const check_test tests[] = {test_idx_roundtrip, test_idx_large,         test_idx_errors,
                                     test_fashion,       test_fashion_installed, test_synthetic,
                                     test_task,          test_alloc_failures,    NULL};
  int rc = check_main(&ctx, tests);
  cleanup();
  return rc;
}
