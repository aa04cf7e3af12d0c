/*
 * Autodiff internals: the primitive table, the attributes a node keeps, and recording
 * (ms__apply). Built on the raw kernels of kernels.h, which compute and never record.
 *
 * Adding a differentiable element-wise op takes three edits, none of them here: its enum
 * entry and name (metastep/ops.h, ops.c), its kernel (ops.c) and its derivative rule
 * (ad_rules.c); see the top of kernels.h. Its family's primitive (P_BINARY, P_UNARY,
 * P_REDUCE) already carries it. A new primitive (an op that is not element-wise) takes its
 * P_ entry below, its row in ad_rules.c's table and its public function in api.c.
 */
#ifndef METASTEP_AD_H
#define METASTEP_AD_H

#include "kernels.h"
#include "metastep/autodiff.h"

/* ---- primitives ---- */
typedef enum ms_prim {
  P_LEAF,
  P_IDENTITY,
  P_COPY,
  P_BINARY, /* element-wise, broadcasting: attr.binop */
  P_UNARY,  /* element-wise: attr.unop */
  P_REDUCE, /* attr.redop, attr.axis, attr.keepdim */
  P_WHERE,
  P_CLAMP,
  P_DOT,
  P_MATVEC,
  P_MATMUL,
  P_OUTER,
  P_DIAG,
  P_RESHAPE,
  P_TRANSPOSE,
  P_PERMUTE,
  P_SLICE,
  P_UNSLICE,
  P_EXPAND,
  P_SUM_TO,
  P_CAT,
  P_LOG_SOFTMAX,
  P_SOFTMAX_XENT,
  P_CUSTOM,
  P_COUNT
} ms_prim;

/* What P_RESHAPE does (attr.reshape). */
typedef enum ms_reshape_kind {
  RESHAPE,          /* ms_tensor_reshape: a view when the layout allows, else a copy */
  RESHAPE_VIEW,     /* ms_tensor_view: a view or an error */
  RESHAPE_DROP_AXIS /* drop the size-1 axis attr.axis (the second half of a tracked
                     * select; a view even of a strided input, where a view would refuse) */
} ms_reshape_kind;

/*
 * What a node needs besides its inputs to re-run or differentiate its primitive. Each
 * primitive reads only the fields its comment in ms_prim (or its rules) names; the
 * selectors of the different primitives share storage.
 */
typedef struct ms_attr {
  union {
    ms_binop binop;          /* P_BINARY */
    ms_unop unop;            /* P_UNARY */
    ms_redop redop;          /* P_REDUCE */
    ms_reshape_kind reshape; /* P_RESHAPE */
    int ncat;                /* P_CAT: the number of inputs */
  };
  int axis, axis2, keepdim;
  int64_t start, stop, step, index;
  double lo, hi;
  int ndim; /* target shape (reshape, expand, sum_to) */
  int64_t shape[MS_MAXDIM];
  int perm[MS_MAXDIM];
  ms_custom *custom; /* retained by the node */
} ms_attr;

typedef int (*ms_forward_fn)(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                             ms_tensor **out);
/* Sets gin[i] (new reference or NULL = zero) for every i with need[i]. */
typedef int (*ms_vjp_fn)(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                         ms_tensor *gout, const int *need, ms_tensor **gin);
/* Sets *tout (new reference, or NULL = zero) from input tangents tin[i] (NULL = zero). */
typedef int (*ms_jvp_fn)(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in,
                         ms_tensor *const *tin, ms_tensor *out, ms_tensor **tout);

typedef struct ms_prim_def {
  const char *name;
  /* The name in messages when it depends on the node (a family's op, a custom primitive's
   * own name); NULL: `name`. */
  const char *(*name_of)(const ms_attr *attr);
  int nin; /* -1: variable (cat, custom) */
  ms_forward_fn forward;
  ms_vjp_fn vjp;
  ms_jvp_fn jvp;
} ms_prim_def;

/* The one table declaring every primitive, indexed by ms_prim (ad_rules.c). */
extern const ms_prim_def ms__prims[];
/* The name of a node of primitive p with attributes attr, for messages ("mul", "sin"). */
const char *ms__prim_name(ms_prim p, const ms_attr *attr);

/* ---- constant element-wise ops ---- */

/* Nonzero for the element-wise ops whose result is a constant (comparisons, piecewise
 * constant functions, indices) and for unknown ops (the kernel reports those): the public
 * ops never record them. Every other op is differentiable, with its rule in ad_rules.c. */
static inline int ms__binop_constant(ms_binop op) {
  switch (op) {
    case MS_LT:
    case MS_LE:
    case MS_GT:
    case MS_GE:
    case MS_EQ:
    case MS_NE:
      return 1;
    default:
      return (unsigned)op >= MS_BINOP_COUNT;
  }
}

static inline int ms__unop_constant(ms_unop op) {
  switch (op) {
    case MS_SIGN:
    case MS_FLOOR:
    case MS_CEIL:
    case MS_ROUND:
    case MS_ISFINITE:
      return 1;
    default:
      return (unsigned)op >= MS_UNOP_COUNT;
  }
}

static inline int ms__redop_constant(ms_redop op) {
  switch (op) {
    case MS_ARGMAX:
    case MS_ARGMIN:
      return 1;
    default:
      return (unsigned)op >= MS_REDOP_COUNT;
  }
}

/*
 * Runs primitive p on nin inputs: forward with raw kernels, then records on every
 * active level where an input is tracked. *out is a new reference.
 */
int ms__apply(ms_ctx *ctx, ms_prim p, const ms_attr *attr, int nin, ms_tensor *const *in,
              ms_tensor **out);
/* Custom primitive hooks (ad.c), used by the P_CUSTOM row of the table. */
const char *ms__custom_name(const ms_attr *attr);
int ms__custom_forward(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor **out);
int ms__custom_vjp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *out,
                   ms_tensor *gout, const int *need, ms_tensor **gin);
int ms__custom_jvp(ms_ctx *ctx, const ms_attr *attr, ms_tensor *const *in, ms_tensor *const *tin,
                   ms_tensor *out, ms_tensor **tout);

#endif
