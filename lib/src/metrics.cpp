#include "xtnn/metrics.hpp"

#include <cmath>
#include <functional>

#include "xtnn/registry.hpp"

namespace xtnn {

namespace {

// The class with the highest score in each row of (rows, width).
std::size_t argmax_row(const float* row, std::size_t width) {
    std::size_t best = 0;
    for (std::size_t c = 1; c < width; ++c) {
        if (row[c] > row[best]) best = c;
    }
    return best;
}

class CategoricalAccuracy : public Metric {
public:
    using Metric::Metric;
    double batch_total(const xt::xarray<float>& p, const xt::xarray<float>& y) const override {
        const std::size_t width = p.shape().back();
        const std::size_t rows = p.size() / width;
        double correct = 0;
        for (std::size_t r = 0; r < rows; ++r) {
            correct += argmax_row(p.data() + r * width, width) == argmax_row(y.data() + r * width, width);
        }
        return correct * static_cast<double>(p.shape()[0]) / static_cast<double>(rows);
    }
};

class SparseCategoricalAccuracy : public Metric {
public:
    using Metric::Metric;
    double batch_total(const xt::xarray<float>& p, const xt::xarray<float>& labels) const override {
        const std::size_t width = p.shape().back();
        double correct = 0;
        for (std::size_t r = 0; r < labels.size(); ++r) {
            correct += static_cast<float>(argmax_row(p.data() + r * width, width)) == labels(r);
        }
        return correct;
    }
};

// Per-sample means over the non-batch axes, summed over samples.
template <class ElementScore>
double per_sample_mean_total(const xt::xarray<float>& p, const xt::xarray<float>& y, ElementScore score) {
    const std::size_t samples = p.shape()[0];
    double total = 0;
    for (std::size_t i = 0; i < p.size(); ++i) total += score(p.data()[i], y.data()[i]);
    return total * static_cast<double>(samples) / static_cast<double>(p.size());
}

class BinaryAccuracy : public Metric {
public:
    using Metric::Metric;
    double batch_total(const xt::xarray<float>& p, const xt::xarray<float>& y) const override {
        return per_sample_mean_total(p, y, [](float pi, float yi) { return double((pi > 0.5f) == (yi > 0.5f)); });
    }
};

class MeanAbsoluteError : public Metric {
public:
    using Metric::Metric;
    double batch_total(const xt::xarray<float>& p, const xt::xarray<float>& y) const override {
        return per_sample_mean_total(p, y, [](float pi, float yi) { return double(std::abs(pi - yi)); });
    }
};

class MeanSquaredErrorMetric : public Metric {
public:
    using Metric::Metric;
    double batch_total(const xt::xarray<float>& p, const xt::xarray<float>& y) const override {
        return per_sample_mean_total(p, y, [](float pi, float yi) { return double(pi - yi) * double(pi - yi); });
    }
};

using MetricFactory = std::function<std::unique_ptr<Metric>(const std::string& shown_name)>;

template <class M>
MetricFactory factory() {
    return [](const std::string& shown_name) { return std::make_unique<M>(shown_name); };
}

const Registry<MetricFactory>& metrics() {
    static const Registry<MetricFactory> registry(
        "metric", {
                      {"accuracy", nullptr},
                      {"acc", nullptr},
                      {"categorical_accuracy", factory<CategoricalAccuracy>()},
                      {"sparse_categorical_accuracy", factory<SparseCategoricalAccuracy>()},
                      {"binary_accuracy", factory<BinaryAccuracy>()},
                      {"mae", factory<MeanAbsoluteError>()},
                      {"mean_absolute_error", factory<MeanAbsoluteError>()},
                      {"mse", factory<MeanSquaredErrorMetric>()},
                      {"mean_squared_error", factory<MeanSquaredErrorMetric>()},
                  });
    return registry;
}

}  // namespace

std::unique_ptr<Metric> make_metric(const std::string& name, const Loss& loss, const Shape& output_shape) {
    const auto& make = metrics().get(name);
    if (make) return make(name);
    return metrics().get(loss.accuracy_metric(output_shape))(name);
}

std::vector<std::string> metric_names() { return metrics().names(); }

}  // namespace xtnn
