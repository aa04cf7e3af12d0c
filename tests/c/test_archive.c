/*
 * Archive tests: round trips bit for bit (NaN payloads, infinities, -0.0, extreme integers,
 * strings with NUL bytes), the exact bytes of a small file worked out by hand from
 * docs/format.md with a CRC-32 computed here bit by bit, every truncation and every single
 * bit flip of a small file refused with a message naming the path, atomic saves, misuse,
 * and an allocation failure at every point of save and load.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "metastep/metastep.h"

static ms_ctx *ctx;
static char dir[256];

static void path_of(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", dir, name);
}

static uint64_t bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double from_bits(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  unsigned char *buf = malloc(1 << 16);
  *n = fread(buf, 1, 1 << 16, f);
  fclose(f);
  return buf;
}

static void spit(const char *path, const unsigned char *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) abort();
  if (n && fwrite(buf, 1, n, f) != n) abort();
  fclose(f);
}

/* CRC-32 (IEEE), bit by bit from the polynomial: independent of the engine's table. */
static uint32_t crc32_ref(const unsigned char *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
  }
  return ~c;
}

static const uint64_t SPECIAL[] = {
    0x7ff8000000000123ULL, /* quiet NaN with a payload */
    0xfff0000000000001ULL, /* signalling NaN, sign set */
    0x7ff0000000000000ULL, /* inf */
    0xfff0000000000000ULL, /* -inf */
    0x8000000000000000ULL, /* -0.0 */
    0x0000000000000001ULL, /* smallest subnormal */
    0x7fefffffffffffffULL, /* DBL_MAX */
    0x3ff0000000000000ULL, /* 1.0 */
};
#define NSPECIAL (sizeof SPECIAL / sizeof SPECIAL[0])

static void test_crc_vector(void) {
  /* The check value of CRC-32/ISO-HDLC. */
  CHECK(crc32_ref((const unsigned char *)"123456789", 9) == 0xCBF43926u);
}

static void test_round_trip(void) {
  char path[512];
  path_of(path, sizeof path, "round.msa");
  ms_archive *a = NULL, *b = NULL;
  ms_tensor *t = NULL, *tt = NULL, *s = NULL, *e = NULL, *got = NULL;
  double vals[NSPECIAL];
  for (size_t i = 0; i < NSPECIAL; i++) vals[i] = from_bits(SPECIAL[i]);
  CHECK_OK_OR_OUT(ctx, ms_tensor_from_data(ctx, 2, (int64_t[]){2, 4}, vals, &t));
  CHECK_OK_OR_OUT(ctx, ms_tensor_transpose(ctx, t, 0, 1, &tt)); /* a strided view */
  CHECK_OK_OR_OUT(ctx, ms_tensor_scalar(ctx, -0.0, &s));
  CHECK_OK_OR_OUT(ctx, ms_tensor_zeros(ctx, 2, (int64_t[]){0, 3}, &e));
  CHECK_OK_OR_OUT(ctx, ms_archive_new(ctx, &a));
  CHECK_OK(ctx, ms_archive_put_tensor(a, "t", t));
  CHECK_OK(ctx, ms_archive_put_tensor(a, "t/transposed", tt));
  CHECK_OK(ctx, ms_archive_put_tensor(a, "scalar", s));
  CHECK_OK(ctx, ms_archive_put_tensor(a, "empty", e));
  for (size_t i = 0; i < NSPECIAL; i++) {
    char name[32];
    snprintf(name, sizeof name, "n%zu", i);
    CHECK_OK(ctx, ms_archive_put_number(a, name, vals[i]));
  }
  CHECK_OK(ctx, ms_archive_put_integer(a, "imin", INT64_MIN));
  CHECK_OK(ctx, ms_archive_put_integer(a, "imax", INT64_MAX));
  CHECK_OK(ctx, ms_archive_put_lstring(a, "bytes", "a\0b\xff", 4));
  CHECK_OK(ctx, ms_archive_put_string(a, "", "the empty name"));
  CHECK_OK(ctx, ms_archive_put_string(a, "empty string", ""));
  CHECK_OK(ctx, ms_archive_put_boolean(a, "yes", 7));
  CHECK_OK(ctx, ms_archive_put_boolean(a, "no", 0));
  CHECK_OK(ctx, ms_archive_put_table(a, "tbl"));
  /* a later in-place write does not reach the archive (put copies) */
  CHECK_OK(ctx, ms_tensor_fill_(ctx, t, 5.0));
  CHECK_OK_OR_OUT(ctx, ms_archive_save(a, path));
  CHECK_OK_OR_OUT(ctx, ms_archive_load(ctx, path, &b));

  CHECK(ms_archive_count(b) == ms_archive_count(a));
  for (int64_t i = 0; i < ms_archive_count(a); i++) {
    const char *na, *nb;
    ms_archive_kind ka, kb;
    CHECK_OK(ctx, ms_archive_entry(a, i, &na, &ka));
    CHECK_OK(ctx, ms_archive_entry(b, i, &nb, &kb));
    CHECK(strcmp(na, nb) == 0 && ka == kb);
  }
  CHECK_OK_OR_OUT(ctx, ms_archive_get_tensor(b, "t", &got));
  CHECK(ms_tensor_ndim(got) == 2 && ms_tensor_dim(got, 0) == 2 && ms_tensor_dim(got, 1) == 4);
  for (size_t i = 0; i < NSPECIAL; i++) CHECK(bits(ms_tensor_data(got)[i]) == SPECIAL[i]);
  CHECK_DROP(&got);
  CHECK_OK_OR_OUT(ctx, ms_archive_get_tensor(b, "t/transposed", &got));
  CHECK(ms_tensor_dim(got, 0) == 4 && ms_tensor_dim(got, 1) == 2);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 2; j++) CHECK(bits(ms_tensor_data(got)[i * 2 + j]) == SPECIAL[j * 4 + i]);
  CHECK_DROP(&got);
  CHECK_OK_OR_OUT(ctx, ms_archive_get_tensor(b, "scalar", &got));
  CHECK(ms_tensor_ndim(got) == 0 && bits(ms_tensor_data(got)[0]) == 0x8000000000000000ULL);
  CHECK_DROP(&got);
  CHECK_OK_OR_OUT(ctx, ms_archive_get_tensor(b, "empty", &got));
  CHECK(ms_tensor_ndim(got) == 2 && ms_tensor_dim(got, 0) == 0 && ms_tensor_dim(got, 1) == 3);
  CHECK_DROP(&got);
  for (size_t i = 0; i < NSPECIAL; i++) {
    char name[32];
    double v = 0;
    snprintf(name, sizeof name, "n%zu", i);
    CHECK_OK(ctx, ms_archive_get_number(b, name, &v));
    CHECK(bits(v) == SPECIAL[i]);
  }
  int64_t iv = 0;
  CHECK_OK(ctx, ms_archive_get_integer(b, "imin", &iv));
  CHECK(iv == INT64_MIN);
  CHECK_OK(ctx, ms_archive_get_integer(b, "imax", &iv));
  CHECK(iv == INT64_MAX);
  const char *str = NULL;
  size_t len = 0;
  CHECK_OK(ctx, ms_archive_get_string(b, "bytes", &str, &len));
  CHECK(len == 4 && memcmp(str, "a\0b\xff", 5) == 0);
  CHECK_OK(ctx, ms_archive_get_string(b, "", &str, NULL));
  CHECK(strcmp(str, "the empty name") == 0);
  CHECK_OK(ctx, ms_archive_get_string(b, "empty string", &str, &len));
  CHECK(len == 0 && str[0] == '\0');
  int yes = 0, no = 1;
  CHECK_OK(ctx, ms_archive_get_boolean(b, "yes", &yes));
  CHECK_OK(ctx, ms_archive_get_boolean(b, "no", &no));
  CHECK(yes == 1 && no == 0);
  CHECK(ms_archive_find(b, "tbl") == MS_ARCHIVE_TABLE);
  CHECK(ms_archive_find(b, "nothing") == MS_ARCHIVE_NONE);

  /* misuse */
  CHECK_FAILS(ctx, ms_archive_put_number(a, "t", 1), MS_EARG,
              "ms_archive_put_number: the archive already has an entry 't'");
  double d = 42;
  CHECK_FAILS(ctx, ms_archive_get_number(b, "lr", &d), MS_EINDEX,
              "ms_archive_get_number: no entry 'lr'");
  CHECK_FAILS(ctx, ms_archive_get_number(b, "t", &d), MS_EARG,
              "ms_archive_get_number: entry 't' is a tensor, not a number");
  CHECK(d == 42);
  CHECK_FAILS(ctx, ms_archive_entry(b, 99, &str, NULL), MS_EINDEX, "index 99 out of range");
out:
  CHECK_RELEASE(t, tt, s, e, got);
  ms_archive_free(a);
  ms_archive_free(b);
  unlink(path);
}

/* The bytes of {x = 5 (integer)}, from docs/format.md. */
static void test_exact_bytes(void) {
  char path[512];
  path_of(path, sizeof path, "exact.msa");
  ms_archive *a = NULL;
  CHECK_OK_OR_OUT(ctx, ms_archive_new(ctx, &a));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_integer(a, "x", 5));
  CHECK_OK_OR_OUT(ctx, ms_archive_save(a, path));
  unsigned char want[32 + 17 + 4] = {0x89, 'M', 'S', 'A', 'R', 'C', '\r', '\n', 1, 0, 0, 0, 0,
                                     0,    0,   0,   1,   0,   0,   0,    0,    0, 0, 0, 17};
  unsigned char *p = want + 32;
  p[0] = 3;   /* kind: integer */
  p[4] = 1;   /* name length */
  p[8] = 'x'; /* name */
  p[9] = 5;   /* value, little-endian int64 */
  uint32_t crc = crc32_ref(want, 49);
  for (int i = 0; i < 4; i++) want[49 + i] = (unsigned char)(crc >> (8 * i));
  size_t n = 0;
  unsigned char *got = slurp(path, &n);
  CHECK(got != NULL && n == sizeof want && memcmp(got, want, sizeof want) == 0);
  free(got);
out:
  ms_archive_free(a);
  unlink(path);
}

/* Writes the small file every corruption test starts from; returns its bytes. */
static unsigned char *small_file(const char *path, size_t *n) {
  ms_archive *a = NULL;
  ms_tensor *t = NULL;
  unsigned char *buf = NULL;
  CHECK_OK_OR_OUT(ctx, ms_tensor_from_data(ctx, 1, (int64_t[]){3}, (double[]){1, -0.0, NAN}, &t));
  CHECK_OK_OR_OUT(ctx, ms_archive_new(ctx, &a));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_tensor(a, "w", t));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_number(a, "lr", 0.5));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_integer(a, "k", 12));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_string(a, "s", "hi"));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_boolean(a, "b", 1));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_table(a, "tbl"));
  CHECK_OK_OR_OUT(ctx, ms_archive_save(a, path));
  buf = slurp(path, n);
out:
  ms_tensor_release(t);
  ms_archive_free(a);
  return buf;
}

/* Loading must fail with MS_EARG, name the path and one of the known reasons, leave *out NULL
 * and allocate nothing that stays. */
static int refused(const char *path, const char *what, size_t at) {
  ms_archive *sentinel = (ms_archive *)&sentinel, *out = sentinel;
  size_t before = ms_ctx_bytes(ctx);
  int st = ms_archive_load(ctx, path, &out);
  const char *m = ms_ctx_error(ctx);
  char prefix[600];
  snprintf(prefix, sizeof prefix, "ms_archive_load: '%s': ", path);
  int ok = st == MS_EARG && out == NULL && ms_ctx_bytes(ctx) == before &&
           strncmp(m, prefix, strlen(prefix)) == 0 &&
           (strstr(m, "truncated") || strstr(m, "bad magic") || strstr(m, "checksum mismatch") ||
            strstr(m, "format version") || strstr(m, "trailing data"));
  if (!ok) {
    fprintf(stderr, "%s at %zu: status %d, out %p, message \"%s\"\n", what, at, st, (void *)out, m);
    if (out != sentinel) ms_archive_free(out);
  }
  return ok;
}

static void test_truncated(void) {
  char path[512], cut[512];
  path_of(path, sizeof path, "small.msa");
  path_of(cut, sizeof cut, "cut.msa");
  size_t n = 0;
  unsigned char *buf = small_file(path, &n);
  if (buf == NULL) return;
  CHECK(n > 36);
  int bad = 0;
  for (size_t len = 0; len < n; len++) {
    spit(cut, buf, len);
    bad += !refused(cut, "truncated", len);
  }
  CHECK(bad == 0);
  /* one byte too many */
  unsigned char *longer = malloc(n + 1);
  memcpy(longer, buf, n);
  longer[n] = 0;
  spit(cut, longer, n + 1);
  CHECK(refused(cut, "extended", n));
  free(longer);
  free(buf);
  unlink(path);
  unlink(cut);
}

static void test_bit_flips(void) {
  char path[512], flip[512];
  path_of(path, sizeof path, "small.msa");
  path_of(flip, sizeof flip, "flip.msa");
  size_t n = 0;
  unsigned char *buf = small_file(path, &n);
  if (buf == NULL) return;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    for (int b = 0; b < 8; b++) {
      buf[i] ^= (unsigned char)(1u << b);
      spit(flip, buf, n);
      bad += !refused(flip, "bit flip", i * 8 + (size_t)b);
      buf[i] ^= (unsigned char)(1u << b);
    }
  }
  CHECK(bad == 0);
  /* a structurally bad file with a correct checksum: an entry count past the body */
  buf[16] = 200;
  uint32_t crc = crc32_ref(buf, n - 4);
  for (int i = 0; i < 4; i++) buf[n - 4 + i] = (unsigned char)(crc >> (8 * i));
  spit(flip, buf, n);
  ms_archive *out = NULL;
  CHECK_FAILS(ctx, ms_archive_load(ctx, flip, &out), MS_EARG, "200 entries cannot fit");
  CHECK(out == NULL);
  free(buf);
  unlink(path);
  unlink(flip);
}

static void test_files(void) {
  char path[512], missing[512];
  path_of(path, sizeof path, "atomic.msa");
  path_of(missing, sizeof missing, "no/such/dir/x.msa");
  ms_archive *a = NULL, *b = NULL;
  CHECK_OK_OR_OUT(ctx, ms_archive_new(ctx, &a));
  CHECK_OK_OR_OUT(ctx, ms_archive_put_integer(a, "v", 1));
  CHECK_OK_OR_OUT(ctx, ms_archive_save(a, path));
  CHECK_FAILS(ctx, ms_archive_save(a, missing), MS_ESTATE, "no/such/dir/x.msa");
  CHECK(access(missing, F_OK) != 0);
  /* overwriting replaces the file and leaves no temporary beside it */
  CHECK_OK_OR_OUT(ctx, ms_archive_put_integer(a, "w", 2));
  CHECK_OK_OR_OUT(ctx, ms_archive_save(a, path));
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  CHECK(access(tmp, F_OK) != 0);
  CHECK_OK_OR_OUT(ctx, ms_archive_load(ctx, path, &b));
  CHECK(ms_archive_count(b) == 2 && ms_archive_find(b, "w") == MS_ARCHIVE_INTEGER);
  ms_archive_free(b);
  b = NULL;
  CHECK_FAILS(ctx, ms_archive_load(ctx, missing, &b), MS_ESTATE, "cannot open");
  CHECK_FAILS(ctx, ms_archive_load(ctx, dir, &b), MS_ESTATE, "is not a regular file");
  CHECK(b == NULL);
out:
  ms_archive_free(a);
  ms_archive_free(b);
  unlink(path);
}

/* Every allocation of a save and a load failing in turn: MS_ENOMEM, nothing leaked, and the
 * file on disk is either the old or the new one. */
static void test_alloc_failures(void) {
  char path[512];
  path_of(path, sizeof path, "alloc.msa");
  check_alloc fs = {0, -1, 0};
  ms_ctx *c = ms_ctx_new(check_failing_alloc, &fs);
  if (c == NULL) return;
  int leaks = 0, wrong = 0;
  for (long k = 0;; k++) {
    fs.n = 0;
    fs.fail_at = k;
    ms_archive *a = NULL, *b = NULL;
    ms_tensor *t = NULL;
    int st = ms_tensor_from_data(c, 1, (int64_t[]){2}, (double[]){1, 2}, &t);
    if (st == MS_OK) st = ms_archive_new(c, &a);
    for (int i = 0; st == MS_OK && i < 40; i++) {
      char name[16];
      snprintf(name, sizeof name, "e%d", i);
      st = i % 2 ? ms_archive_put_tensor(a, name, t) : ms_archive_put_string(a, name, "s");
    }
    if (st == MS_OK) st = ms_archive_save(a, path);
    if (st == MS_OK) st = ms_archive_load(c, path, &b);
    if (st == MS_OK) CHECK(ms_archive_count(b) == 40);
    if (st != MS_OK && st != MS_ENOMEM) wrong++;
    ms_archive_free(a);
    ms_archive_free(b);
    ms_tensor_release(t);
    if (check_sweep_leaked(c, 0, 0, k, &leaks)) break;
    if (st == MS_OK) break;
  }
  CHECK(leaks == 0 && wrong == 0);
  check_ctx_free(c);
  unlink(path);
}

int main(void) {
  snprintf(dir, sizeof dir, "%s/metastep_archive_XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (mkdtemp(dir) == NULL) return 1;
  int rc = check_main(
      &ctx, (check_test[]){test_crc_vector, test_round_trip, test_exact_bytes, test_truncated,
                           test_bit_flips, test_files, test_alloc_failures, NULL});
  rmdir(dir);
  return rc;
}
