/* Umbrella header: the whole metastep engine C API. */
#ifndef METASTEP_METASTEP_H
#define METASTEP_METASTEP_H

#define METASTEP_VERSION "0.1.0"

#include "metastep/ctx.h"
#include "metastep/tensor.h"
#include "metastep/ops.h"
#include "metastep/linalg.h"
#include "metastep/autodiff.h"
#include "metastep/meta.h"
#include "metastep/objective.h"

#endif
