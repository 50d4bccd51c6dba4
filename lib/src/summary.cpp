// Model::summary: Keras 3's box table by default, Keras 2's ASCII table (the book's) as an
// option; a functional model's tables add Keras's "Connected to" column. Column widths and number
// formats follow Keras's summary_utils.

#include <map>
#include <sstream>

#include <fmt/format.h>

#include "model_internals.hpp"
#include "text.hpp"
#include "xtnn/layer.hpp"
#include "xtnn/model.hpp"

namespace xtnn {

namespace {

using internal::repeat;

struct Row {
    std::string layer;
    std::string output_shape;
    std::string params;
    std::string connected_to;
};

std::string with_thousands(std::size_t n) {
    std::string digits = std::to_string(n);
    std::string result;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) result += ',';
        result += digits[i];
    }
    return result;
}

std::string readable_bytes(std::size_t bytes) {
    const char* units[] = {"B", "KB", "MB", "GB", "TB"};
    double value = static_cast<double>(bytes);
    std::size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < std::size(units)) {
        value /= 1024.0;
        ++unit;
    }
    return fmt::format("{:.2f} {}", value, units[unit]);
}

// Splits `text` into lines of at most `width` characters, breaking at spaces where possible.
std::vector<std::string> wrap(const std::string& text, std::size_t width) {
    std::vector<std::string> lines;
    std::string rest = text;
    while (rest.size() > width) {
        std::size_t cut = rest.rfind(' ', width);
        if (cut == std::string::npos || cut == 0) cut = width;
        lines.push_back(rest.substr(0, cut));
        rest = rest.substr(cut == width && rest[cut] != ' ' ? cut : cut + 1);
    }
    lines.push_back(rest);
    return lines;
}

std::vector<Row> stack_rows(const Model& model) {
    std::vector<Row> rows;
    const bool built = model.built();
    Shape shape = built ? model.input_shape() : Shape{};
    for (std::size_t i = 0; i < model.size(); ++i) {
        const Layer& layer = model.layer(i);
        Row row{layer.name() + " (" + layer.class_name() + ")", "?", "0 (unbuilt)", ""};
        if (built) {
            shape = layer.output_shape(shape);
            row.output_shape = batch_shape_to_string(shape);
            row.params = with_thousands(layer.count_params());
        }
        rows.push_back(row);
    }
    return rows;
}

// One row a layer, in graph order; "Connected to" lists what each of its calls reads, as
// Keras's "dense[0][0]" (layer, call, tensor).
std::vector<Row> graph_rows(const Model& model) {
    std::vector<Row> rows;
    std::map<const Layer*, std::size_t> row_of;
    const auto calls = model.layer_calls();
    const auto node_index = node_indices(calls);
    for (const auto& call : calls) {
        const Layer& layer = *call->layer;
        if (!row_of.count(&layer)) {
            row_of[&layer] = rows.size();
            rows.push_back({layer.name() + " (" + layer.class_name() + ")", batch_shape_to_string(call->output_shape),
                            with_thousands(layer.count_params()), call->inputs.empty() ? "-" : ""});
        }
        Row& row = rows[row_of[&layer]];
        for (const auto& input : call->inputs) {
            row.connected_to += (row.connected_to.empty() ? "" : ", ") + input.name() + "[" +
                                std::to_string(node_index.at(&input.producer())) + "][0]";
        }
    }
    return rows;
}

std::vector<Row> rows_of(const Model& model) { return model.is_sequential() ? stack_rows(model) : graph_rows(model); }

std::string box_summary(const Model& model) {
    const bool connected = !model.is_sequential();
    const std::vector<std::size_t> widths = connected ? std::vector<std::size_t>{29, 22, 11, 30}
                                                      : std::vector<std::size_t>{31, 22, 13};
    const std::size_t columns = widths.size();
    const std::size_t params_column = 2;
    std::ostringstream out;
    auto rule = [&](const char* left, const char* middle, const char* right, const char* line) {
        out << left;
        for (std::size_t c = 0; c < columns; ++c) out << repeat(line, widths[c] + 2) << (c + 1 < columns ? middle : right);
        out << '\n';
    };
    auto cells = [&](const Row& row, const char* bar) {
        const std::string texts[] = {row.layer, row.output_shape, row.params, row.connected_to};
        std::vector<std::vector<std::string>> lines;
        std::size_t height = 0;
        for (std::size_t c = 0; c < columns; ++c) {
            lines.push_back(wrap(texts[c], widths[c]));
            height = std::max(height, lines.back().size());
        }
        for (std::size_t line = 0; line < height; ++line) {
            out << bar;
            for (std::size_t c = 0; c < columns; ++c) {
                const std::string text = line < lines[c].size() ? lines[c][line] : "";
                out << ' '
                    << (c == params_column ? fmt::format("{:>{}}", text, widths[c]) : fmt::format("{:<{}}", text, widths[c]))
                    << ' ' << bar;
            }
            out << '\n';
        }
    };
    out << "Model: \"" << model.name() << "\"\n";
    rule("\u250f", "\u2533", "\u2513", "\u2501");
    cells({"Layer (type)", "Output Shape", "Param #", "Connected to"}, "\u2503");
    rule("\u2521", "\u2547", "\u2529", "\u2501");
    const auto rows = rows_of(model);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        cells(rows[i], "\u2502");
        if (i + 1 < rows.size()) rule("\u251c", "\u253c", "\u2524", "\u2500");
    }
    rule("\u2514", "\u2534", "\u2518", "\u2500");
    auto count = [](std::size_t params) { return with_thousands(params) + " (" + readable_bytes(params * sizeof(float)) + ")"; };
    const std::size_t params = model.count_params(), trainable = model.count_trainable_params();
    out << " Total params: " << count(params) << '\n';
    out << " Trainable params: " << count(trainable) << '\n';
    out << " Non-trainable params: " << count(params - trainable) << '\n';
    if (model.optimizer() && model.optimizer()->state_size() > 0) {
        const std::size_t state = model.optimizer()->state_size();
        out << " Optimizer params: " << with_thousands(state) << " (" << readable_bytes(state * sizeof(float)) << ")\n";
    }
    return out.str();
}

// Keras 2's print_row: each field is appended, cut at its column stop, and padded to it; the
// character before the next field is forced to a space.
std::string ascii_row(const std::vector<std::string>& fields) {
    constexpr std::size_t stops[] = {29, 55, 65, 98};
    std::string line;
    for (std::size_t i = 0; i < fields.size(); ++i) {
        if (i > 0) line.back() = ' ';
        line += fields[i];
        line = line.substr(0, stops[i]);
        line += std::string(stops[i] - line.size(), ' ');
    }
    return line + '\n';
}

std::string ascii_summary(const Model& model) {
    const bool connected = !model.is_sequential();
    const std::size_t width = connected ? 98 : 65;
    const std::string thin(width, '_');
    const std::string thick(width, '=');
    auto fields = [&](std::vector<std::string> texts) {
        if (!connected) texts.pop_back();
        return texts;
    };
    std::string out = thin + '\n' + ascii_row(fields({"Layer (type)", "Output Shape", "Param #", "Connected to"})) + thick + '\n';
    const auto rows = rows_of(model);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        std::string params = rows[i].params;
        std::erase(params, ',');
        out += ascii_row(fields({rows[i].layer, rows[i].output_shape, params, rows[i].connected_to}));
        out += (i + 1 < rows.size() ? thin : thick) + '\n';
    }
    const std::size_t params = model.count_params(), trainable = model.count_trainable_params();
    out += "Total params: " + with_thousands(params) + '\n';
    out += "Trainable params: " + with_thousands(trainable) + '\n';
    out += "Non-trainable params: " + with_thousands(params - trainable) + '\n';
    out += thin + '\n';
    return out;
}

}  // namespace

std::string Model::summary_string(SummaryStyle style) const {
    return style == SummaryStyle::box ? box_summary(*this) : ascii_summary(*this);
}

void Model::summary(SummaryStyle style, std::ostream& out) const { out << summary_string(style); }

}  // namespace xtnn
