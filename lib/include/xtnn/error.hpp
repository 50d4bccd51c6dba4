#pragma once
// The exceptions xtnn throws. Every message names the operation or file, what was expected and
// what was found, so a user can fix the call without a debugger.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace xtnn {

/// Base of every xtnn error.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Tensors whose shapes do not fit the operation.
class ShapeError : public Error {
public:
    using Error::Error;
};

/// An argument outside its allowed range, an unknown name, a call in the wrong state.
class ValueError : public Error {
public:
    using Error::Error;
};

/// A NaN or infinity where anomaly detection (xtnn/autodiff.hpp) watches for one.
class NumericError : public Error {
public:
    using Error::Error;
};

/// A file that cannot be read or written, or whose contents are malformed.
class IoError : public Error {
public:
    using Error::Error;
};

/// "(2, 3)" for a shape, as Python prints tuples ("(5,)" for rank 1).
template <class Shape>
std::string shape_to_string(const Shape& shape) {
    std::string text = "(";
    std::size_t i = 0;
    for (auto extent : shape) {
        if (i++ > 0) text += ", ";
        text += std::to_string(extent);
    }
    if (i == 1) text += ",";
    return text + ")";
}

/// "(None, 28, 32)" for a per-sample shape, as Keras prints shapes with a batch axis.
template <class Shape>
std::string batch_shape_to_string(const Shape& shape) {
    std::string text = "(None";
    for (auto extent : shape) text += ", " + std::to_string(extent);
    return text + ")";
}

}  // namespace xtnn
