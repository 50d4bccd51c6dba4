#pragma once
// Everything xtnn offers, in one include.

#include "xtnn/autodiff.hpp"
#include "xtnn/error.hpp"
#include "xtnn/gradcheck.hpp"
#include "xtnn/ops.hpp"
#include "xtnn/random.hpp"
#include "xtnn/tensor.hpp"
