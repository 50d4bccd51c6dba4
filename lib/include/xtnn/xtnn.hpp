#pragma once
// Everything xtnn offers, in one include.

#include "xtnn/activations.hpp"
#include "xtnn/autodiff.hpp"
#include "xtnn/callbacks.hpp"
#include "xtnn/error.hpp"
#include "xtnn/gradcheck.hpp"
#include "xtnn/initializers.hpp"
#include "xtnn/layers.hpp"
#include "xtnn/losses.hpp"
#include "xtnn/metrics.hpp"
#include "xtnn/model.hpp"
#include "xtnn/ops.hpp"
#include "xtnn/optimizers.hpp"
#include "xtnn/progress.hpp"
#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"
