/* Umbrella header: the whole metastep engine C API. */
#ifndef METASTEP_METASTEP_H
#define METASTEP_METASTEP_H

#define METASTEP_VERSION "0.2.0"
#define METASTEP_VERSION_NUMBER 200

#include "metastep/archive.h"
#include "metastep/autodiff.h"
#include "metastep/ctx.h"
#include "metastep/data.h"
#include "metastep/learned.h"
#include "metastep/linalg.h"
#include "metastep/meta.h"
#include "metastep/nn.h"
#include "metastep/objective.h"
#include "metastep/ops.h"
#include "metastep/optim.h"
#include "metastep/provider.h"
#include "metastep/tensor.h"
#include "metastep/train.h"

#endif
