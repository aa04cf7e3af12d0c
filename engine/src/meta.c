/*
 * Names of the meta-gradient statuses. The closed form of GD (ms_meta_gd_exact) and the
 * stable unroll (ms_meta_stable_quadratic and the general method) live in stable.c, next to
 * the log-space result handling they share.
 */
#include "internal.h"

const char *ms_meta_status_name(int status) {
  switch (status) {
    case MS_META_OK:
      return "ok";
    case MS_META_OVERFLOW:
      return "overflow";
    case MS_META_UNDERFLOW:
      return "underflow";
    case MS_META_NAN:
      return "nan";
    default:
      return "unknown";
  }
}
