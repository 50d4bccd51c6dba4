#pragma once
// The one way the Keras file readers report a problem: an IoError naming the file or entry.

#include <string>

#include "xtnn/error.hpp"

namespace xtnn::keras {

[[noreturn]] inline void fail(const std::string& what, const std::string& problem) { throw IoError(what + ": " + problem); }

}  // namespace xtnn::keras
