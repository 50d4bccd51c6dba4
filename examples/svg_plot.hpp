#pragma once
// A minimal SVG line and bar chart writer for the examples: axes, ticks, labels and a legend,
// no dependency beyond fmt.

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace svg_plot {

struct Series {
    std::string label;
    std::vector<double> x;
    std::vector<double> y;
    bool dashed = false;
};

struct Chart {
    std::string title;
    std::string x_label;
    std::string y_label;
    std::vector<Series> series;
};

namespace detail {

inline const char* color(std::size_t i) {
    static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};
    return palette[i % 6];
}

// "Nice" tick positions covering [low, high].
inline std::vector<double> ticks(double low, double high, int target = 6) {
    const double span = high - low > 0 ? high - low : 1.0;
    const double raw = span / target;
    const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
    double step = magnitude;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
        if (m * magnitude >= raw) {
            step = m * magnitude;
            break;
        }
    }
    std::vector<double> result;
    for (double t = std::ceil(low / step) * step; t <= high + step * 1e-9; t += step) result.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
    return result;
}

inline std::string escape(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else if (c == '&') out += "&amp;";
        else out += c;
    }
    return out;
}

struct Frame {
    double width = 640, height = 400, left = 70, right = 20, top = 40, bottom = 55;
    double x_min, x_max, y_min, y_max;
    double px(double x) const { return left + (x - x_min) / (x_max - x_min) * (width - left - right); }
    double py(double y) const { return height - bottom - (y - y_min) / (y_max - y_min) * (height - top - bottom); }
};

inline std::string axes(const Frame& f, const Chart& chart, bool x_ticks = true) {
    std::string out = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
        "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
        "<text x=\"{2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{3}</text>\n",
        f.width, f.height, f.width / 2, escape(chart.title));
    for (double t : ticks(f.y_min, f.y_max)) {
        out += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#ddd\"/>\n"
                           "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:g}</text>\n",
                           f.left, f.width - f.right, f.py(t), f.left - 6, f.py(t) + 4, t);
    }
    if (x_ticks) {
        for (double t : ticks(f.x_min, f.x_max)) {
            out += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"black\"/>\n"
                               "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:g}</text>\n",
                               f.px(t), f.height - f.bottom, f.height - f.bottom + 5, f.height - f.bottom + 18, t);
        }
    }
    out += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"black\"/>\n"
                       "<line x1=\"{0}\" x2=\"{0}\" y1=\"{3}\" y2=\"{2}\" stroke=\"black\"/>\n"
                       "<text x=\"{4}\" y=\"{5}\" text-anchor=\"middle\">{6}</text>\n"
                       "<text transform=\"translate(16,{7}) rotate(-90)\" text-anchor=\"middle\">{8}</text>\n",
                       f.left, f.width - f.right, f.height - f.bottom, f.top, (f.left + f.width - f.right) / 2,
                       f.height - 12, escape(chart.x_label), (f.top + f.height - f.bottom) / 2, escape(chart.y_label));
    return out;
}

inline void write(const std::string& path, const std::string& svg) {
    std::ofstream file(path);
    file << svg;
    if (!file) throw std::runtime_error("cannot write " + path);
}

}  // namespace detail

/// Lines through each series' points, with a legend in the top right.
inline void write_line_chart(const std::string& path, const Chart& chart) {
    detail::Frame f;
    f.x_min = f.y_min = 1e300;
    f.x_max = f.y_max = -1e300;
    for (const auto& s : chart.series) {
        for (double x : s.x) f.x_min = std::min(f.x_min, x), f.x_max = std::max(f.x_max, x);
        for (double y : s.y) f.y_min = std::min(f.y_min, y), f.y_max = std::max(f.y_max, y);
    }
    if (f.x_max <= f.x_min) f.x_max = f.x_min + 1;
    const double pad = (f.y_max - f.y_min) * 0.05 + 1e-9;
    f.y_min -= pad;
    f.y_max += pad;
    std::string svg = detail::axes(f, chart);
    for (std::size_t i = 0; i < chart.series.size(); ++i) {
        const auto& s = chart.series[i];
        std::string points;
        for (std::size_t k = 0; k < s.x.size(); ++k) points += fmt::format("{:.1f},{:.1f} ", f.px(s.x[k]), f.py(s.y[k]));
        svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>\n", detail::color(i),
                           s.dashed ? " stroke-dasharray=\"6,4\"" : "", points);
        const double ly = f.top + 8 + 18.0 * double(i);
        svg += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"2\"{4}/>"
                           "<text x=\"{5}\" y=\"{6}\">{7}</text>\n",
                           f.width - f.right - 150, f.width - f.right - 124, ly, detail::color(i),
                           s.dashed ? " stroke-dasharray=\"6,4\"" : "", f.width - f.right - 118, ly + 4, detail::escape(s.label));
    }
    detail::write(path, svg + "</svg>\n");
}

/// One bar per label, with its value printed above it.
inline void write_bar_chart(const std::string& path, const Chart& chart, const std::vector<std::string>& labels,
                            const std::vector<double>& values) {
    detail::Frame f;
    f.x_min = 0;
    f.x_max = double(values.size());
    f.y_min = 0;
    f.y_max = std::max(1e-9, *std::max_element(values.begin(), values.end())) * 1.1;
    std::string svg = detail::axes(f, chart, false);
    for (std::size_t i = 0; i < values.size(); ++i) {
        const double x0 = f.px(double(i) + 0.15), x1 = f.px(double(i) + 0.85);
        svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>\n"
                           "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.4f}</text>\n"
                           "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                           x0, f.py(values[i]), x1 - x0, f.py(0) - f.py(values[i]), detail::color(0), (x0 + x1) / 2,
                           f.py(values[i]) - 5, values[i], (x0 + x1) / 2, f.height - f.bottom + 18, detail::escape(labels[i]));
    }
    detail::write(path, svg + "</svg>\n");
}

}  // namespace svg_plot
