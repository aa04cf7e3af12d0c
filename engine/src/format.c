/*
 * NumPy-style tensor formatting (the layout of numpy.array2string with separator ", "
 * and no "array(" prefix):
 *
 *   [[ 1.,  2.],         integral data: every finite element an integer below 1e15
 *    [-3., nan]]
 *   [0.5000, 0.2500]     otherwise fixed point with 4 decimals ("%.4f")
 *   [1.0000e-05, 1.0000e+00]   scientific ("%.4e") when, over the finite nonzero
 *                        magnitudes, max >= 1e8, min < 1e-4 or max/min > 1e3 (NumPy's rule)
 *
 * All elements are right-aligned to one width. Rows are wrapped at 75 columns, blocks of
 * a 3-D tensor are separated by a blank line, and once numel > threshold the middle of
 * every axis longer than 2*edge is replaced by "..." (NumPy's summarization; the format
 * is chosen from the elements shown). A 0-d tensor is a bare number; an empty one "[]".
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define LINE_WIDTH 75
#define ELEM_MAX 64

enum { MODE_INT, MODE_FIXED, MODE_SCI };

typedef struct fmt {
  ms_ctx *ctx;
  const ms_tensor *t;
  int summarize;
  int64_t edge;
  /* element statistics (pass 1) */
  int all_int, any_finite, any_nonzero;
  double max_abs, min_abs_nonzero;
  int mode;
  int width; /* common element width (pass 2) */
  /* output: base points at a size_t header holding the allocation size */
  char *base;
  size_t cap, len;
  int col; /* characters since the last newline */
  int status;
} fmt;

/* ---- output buffer ---- */

static char *text(fmt *f) { return f->base + sizeof(size_t); }

static int reserve(fmt *f, size_t extra) {
  if (f->status != MS_OK) return 0;
  size_t need = sizeof(size_t) + f->len + extra + 1;
  if (need <= f->cap) return 1;
  size_t cap = f->cap ? f->cap : 256;
  while (cap < need) cap *= 2;
  char *nb = ms_ctx_alloc(f->ctx, cap);
  if (nb == NULL) {
    f->status = MS_ENOMEM; /* ms_ctx_alloc recorded the message */
    return 0;
  }
  if (f->base != NULL) {
    memcpy(nb + sizeof(size_t), text(f), f->len);
    ms_ctx_dealloc(f->ctx, f->base, f->cap);
  }
  f->base = nb;
  f->cap = cap;
  memcpy(f->base, &f->cap, sizeof f->cap);
  return 1;
}

static void put(fmt *f, const char *s, size_t n) {
  if (!reserve(f, n)) return;
  memcpy(text(f) + f->len, s, n);
  f->len += n;
  text(f)[f->len] = '\0';
  for (size_t i = 0; i < n; i++) f->col = s[i] == '\n' ? 0 : f->col + 1;
}

static void puts_(fmt *f, const char *s) { put(f, s, strlen(s)); }

static void spaces(fmt *f, int n) {
  for (int i = 0; i < n; i++) put(f, " ", 1);
}

/* NumPy's line.rstrip() before a wrap: drop trailing spaces of the current line. */
static void rstrip(fmt *f) {
  if (f->status != MS_OK) return;
  while (f->len > 0 && text(f)[f->len - 1] == ' ') {
    f->len--;
    f->col--;
  }
  text(f)[f->len] = '\0';
}

/* ---- elements ---- */

static int elem_str(const fmt *f, double x, char *buf) {
  if (isnan(x)) return snprintf(buf, ELEM_MAX, "nan");
  if (isinf(x)) return snprintf(buf, ELEM_MAX, x > 0 ? "inf" : "-inf");
  switch (f->mode) {
    case MODE_INT:
      return snprintf(buf, ELEM_MAX, "%.0f.", x);
    case MODE_FIXED:
      return snprintf(buf, ELEM_MAX, "%.4f", x);
    default:
      return snprintf(buf, ELEM_MAX, "%.4e", x);
  }
}

static void stat_elem(fmt *f, double x) {
  if (!isfinite(x)) return;
  double m = fabs(x);
  f->any_finite = 1;
  if (x != floor(x)) f->all_int = 0;
  if (m > f->max_abs) f->max_abs = m;
  if (m != 0 && (!f->any_nonzero || m < f->min_abs_nonzero)) f->min_abs_nonzero = m;
  if (m != 0) f->any_nonzero = 1;
}

static void width_elem(fmt *f, double x) {
  char buf[ELEM_MAX];
  int n = elem_str(f, x, buf);
  if (n > f->width) f->width = n;
}

/* Whether the middle of axis d is replaced by "...". */
static int elided(const fmt *f, int d) { return f->summarize && 2 * f->edge < f->t->shape[d]; }

/* Calls fn on every element that will be shown, in row-major order. */
static void visit(fmt *f, int d, int64_t off, void (*fn)(fmt *, double)) {
  const ms_tensor *t = f->t;
  if (d == t->ndim) {
    fn(f, MS_TENSOR_DATA(t)[off]);
    return;
  }
  int64_t n = t->shape[d];
  for (int64_t i = 0; i < n; i++) {
    if (elided(f, d) && i == f->edge) i = n - f->edge;
    visit(f, d + 1, off + i * t->strides[d], fn);
  }
}

static void choose_mode(fmt *f) {
  if (f->all_int && f->max_abs < 1e15)
    f->mode = MODE_INT;
  else if (f->any_nonzero && (f->max_abs >= 1e8 || f->min_abs_nonzero < 1e-4 ||
                              f->max_abs / f->min_abs_nonzero > 1e3))
    f->mode = MODE_SCI;
  else
    f->mode = MODE_FIXED;
}

static void word(fmt *f, const char *w, int wlen, int hang, int elem_width) {
  /* NumPy's _extendLine: wrap when the word would pass the width, unless the line holds
   * nothing but its indentation (wrapping would not help). */
  if (f->col + wlen > elem_width && f->col > hang) {
    rstrip(f);
    puts_(f, "\n");
    spaces(f, hang);
  }
  put(f, w, (size_t)wlen);
}

static void put_elem(fmt *f, double x, int hang, int elem_width) {
  char buf[ELEM_MAX], pad[ELEM_MAX * 2];
  int n = elem_str(f, x, buf);
  int p = f->width - n;
  memset(pad, ' ', (size_t)p);
  memcpy(pad + p, buf, (size_t)n);
  word(f, pad, f->width, hang, elem_width);
}

/*
 * NumPy's _formatArray recurser, streamed. hang is the hanging indent of this level
 * (the column where its first element starts), width the line width left for it.
 */
static void emit(fmt *f, int d, int64_t off, int hang, int width) {
  const ms_tensor *t = f->t;
  int64_t n = t->shape[d];
  int axes_left = t->ndim - d;
  int show_summary = elided(f, d);
  puts_(f, "[");
  if (axes_left == 1) {
    int elem_width = width - 1; /* room for the "," or "]" after each element */
    for (int64_t i = 0; i < n; i++) {
      if (show_summary && i == f->edge) {
        word(f, "...", 3, hang, elem_width);
        puts_(f, ", ");
        i = n - f->edge;
      }
      put_elem(f, MS_TENSOR_DATA(t)[off + i * t->strides[d]], hang, elem_width);
      if (i + 1 < n) puts_(f, ", ");
    }
  } else {
    for (int64_t i = 0; i < n; i++) {
      if (show_summary && i == f->edge) {
        puts_(f, "...,");
        for (int k = 0; k < axes_left - 1; k++) puts_(f, "\n");
        spaces(f, hang);
        i = n - f->edge;
      }
      emit(f, d + 1, off + i * t->strides[d], hang + 1, width - 1);
      if (i + 1 < n) {
        puts_(f, ",");
        for (int k = 0; k < axes_left - 1; k++) puts_(f, "\n");
        spaces(f, hang);
      }
    }
  }
  puts_(f, "]");
}

int ms_tensor_format(ms_ctx *ctx, const ms_tensor *t, int64_t threshold, int edge, char **out) {
  *out = NULL;
  if (t == NULL) return ms_ctx_fail(ctx, MS_EARG, "format: tensor argument is NULL");
  fmt f;
  memset(&f, 0, sizeof f);
  f.ctx = ctx;
  f.t = t;
  f.edge = edge > 0 ? edge : 3;
  f.summarize = t->numel > (threshold > 0 ? threshold : 1000);
  f.all_int = 1;
  f.status = MS_OK;
  if (t->numel == 0) {
    puts_(&f, "[]");
  } else {
    visit(&f, 0, 0, stat_elem);
    choose_mode(&f);
    if (t->ndim == 0) {
      char buf[ELEM_MAX];
      elem_str(&f, MS_TENSOR_DATA(t)[0], buf);
      puts_(&f, buf);
    } else {
      visit(&f, 0, 0, width_elem);
      emit(&f, 0, 0, 1, LINE_WIDTH);
    }
  }
  if (f.status != MS_OK) {
    if (f.base != NULL) ms_ctx_dealloc(ctx, f.base, f.cap);
    return f.status;
  }
  *out = text(&f);
  return MS_OK;
}

void ms_string_free(ms_ctx *ctx, char *s) {
  if (s == NULL) return;
  char *base = s - sizeof(size_t);
  size_t cap;
  memcpy(&cap, base, sizeof cap);
  ms_ctx_dealloc(ctx, base, cap);
}
