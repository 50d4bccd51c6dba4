#include "keras/compile_settings.hpp"

#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "keras/fail.hpp"
#include "xtnn/json.hpp"
#include "xtnn/metrics.hpp"

namespace xtnn::keras {

namespace {

constexpr const char* skip_compile_hint = "; load with LoadOptions{.compile = false} to leave the model uncompiled";


std::string lower(std::string text) {
    for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
}

const nlohmann::json& field_or_null(const nlohmann::json& object, const char* key) {
    static const nlohmann::json null_value;
    return object.is_object() && object.contains(key) ? object[key] : null_value;
}

// Keras's settings that are off: null, false or 0.
bool is_neutral(const nlohmann::json& value) {
    return value.is_null() || (value.is_boolean() && !value.get<bool>()) || (value.is_number() && value.get<double>() == 0.0);
}

OptimizerSpec optimizer_from_keras(const nlohmann::json& keras, const std::string& what) {
    if (keras.is_string()) return OptimizerSpec(lower(keras.get<std::string>()));
    if (!keras.is_object() || !keras.contains("class_name") || !keras["class_name"].is_string()) {
        fail(what, "compile config: the optimizer must be a name or {\"class_name\": ..., \"config\": {...}}, got " +
                       json::excerpt(keras) + skip_compile_hint);
    }
    const std::string name = lower(keras["class_name"].get<std::string>());
    const nlohmann::json config = keras.contains("config") && keras["config"].is_object() ? keras["config"] : nlohmann::json::object();
    nlohmann::json converted = {{"name", name}};
    static const std::set<std::string> hyper_parameters = {"learning_rate", "beta_1", "beta_2", "epsilon", "momentum",
                                                           "nesterov", "rho"};
    // Keras's settings xtnn has no use for when they are off.
    static const std::set<std::string> ignored = {"name", "ema_momentum", "ema_overwrite_frequency", "jit_compile",
                                                  "is_legacy_optimizer"};
    for (const auto& [key, value] : config.items()) {
        const std::string field = key == "lr" ? "learning_rate" : key;
        if (hyper_parameters.count(field)) {
            if (!value.is_number() && !value.is_boolean()) {
                fail(what, fmt::format("compile config: {} '{}' is {}; xtnn takes a number (no schedules){}", name, field,
                                       json::excerpt(value), skip_compile_hint));
            }
            converted[field] = value;
        } else if (!ignored.count(field) && !is_neutral(value)) {
            fail(what, fmt::format("compile config: {} sets '{}' to {}, which xtnn does not support{}", name, field,
                                   json::excerpt(value), skip_compile_hint));
        }
    }
    try {
        return OptimizerSpec::from_config(converted);
    } catch (const Error& e) {
        fail(what, std::string("compile config: ") + e.what() + skip_compile_hint);
    }
}

std::string loss_from_keras(const nlohmann::json& keras, const std::string& what) {
    if (keras.is_string()) return lower(keras.get<std::string>());
    if (!keras.is_object() || !keras.contains("class_name") || !keras["class_name"].is_string()) {
        fail(what, "compile config: a loss must be a name or {\"class_name\": ..., \"config\": {...}}, got " +
                       json::excerpt(keras) + skip_compile_hint);
    }
    const nlohmann::json config = keras.contains("config") && keras["config"].is_object() ? keras["config"] : nlohmann::json::object();
    for (const char* field : {"from_logits", "label_smoothing"}) {
        if (config.contains(field) && !is_neutral(config[field])) {
            fail(what, fmt::format("compile config: the loss {} sets '{}' to {}, which xtnn does not support{}",
                                   keras["class_name"].get<std::string>(), field, json::excerpt(config[field]), skip_compile_hint));
        }
    }
    return snake_case(keras["class_name"].get<std::string>());
}

std::string metric_from_keras(const nlohmann::json& keras, const std::string& what) {
    const auto known = metric_names();
    auto is_known = [&](const std::string& name) { return std::find(known.begin(), known.end(), name) != known.end(); };
    if (keras.is_string()) return keras.get<std::string>();
    std::vector<std::string> candidates;
    if (keras.is_object()) {
        const nlohmann::json config = keras.contains("config") && keras["config"].is_object() ? keras["config"] : nlohmann::json::object();
        for (const char* field : {"name", "fn"}) {
            if (config.contains(field) && config[field].is_string()) candidates.push_back(config[field].get<std::string>());
        }
        if (keras.contains("class_name") && keras["class_name"].is_string()) {
            candidates.push_back(snake_case(keras["class_name"].get<std::string>()));
        }
    }
    for (const auto& name : candidates) {
        if (is_known(name)) return name;
    }
    fail(what, fmt::format("compile config: metric {} is not one xtnn has (known: {}){}", json::excerpt(keras), fmt::join(known, ", "),
                           skip_compile_hint));
}

// Keras's metrics: a list for every output ([["accuracy"]] in Keras 2's files), one list per
// output, or a map by output name.
void metrics_from_keras(const nlohmann::json& keras, const Model& model, CompileOptions& compile, const std::string& what) {
    if (keras.is_null()) return;
    const auto outputs = model.output_names();
    auto names = [&](const nlohmann::json& list) {
        std::vector<std::string> result;
        if (!list.is_array()) return std::vector<std::string>{metric_from_keras(list, what)};
        for (const auto& metric : list) result.push_back(metric_from_keras(metric, what));
        return result;
    };
    if (keras.is_object() && !keras.contains("class_name")) {
        for (const auto& [output, list] : keras.items()) compile.metrics_by_output[output] = names(list);
        return;
    }
    if (!keras.is_array()) fail(what, "compile config: metrics must be a list, got " + json::excerpt(keras) + skip_compile_hint);
    const bool per_output = !keras.empty() && std::all_of(keras.begin(), keras.end(), [](const auto& m) { return m.is_array(); });
    if (!per_output) {
        compile.metrics = names(keras);
        return;
    }
    if (outputs.size() == 1 && keras.size() == 1) {
        compile.metrics = names(keras[0]);
        return;
    }
    if (keras.size() != outputs.size()) {
        fail(what, fmt::format("compile config: {} metric lists for {} outputs{}", keras.size(), outputs.size(), skip_compile_hint));
    }
    for (std::size_t o = 0; o < outputs.size(); ++o) compile.metrics_by_output[outputs[o]] = names(keras[o]);
}

}  // namespace

void compile_from_keras(Model& model, const nlohmann::json& settings, const char* optimizer_field, const std::string& what) {
    const auto& weighted = field_or_null(settings, "weighted_metrics");
    if (!weighted.is_null() && !(weighted.is_array() && weighted.empty())) {
        fail(what, std::string("compile config: weighted_metrics are not supported") + skip_compile_hint);
    }
    const auto& loss = field_or_null(settings, "loss");
    const auto& loss_weights = field_or_null(settings, "loss_weights");
    CompileOptions compile{.optimizer = optimizer_from_keras(field_or_null(settings, optimizer_field), what)};
    if (loss.is_object() && !loss.contains("class_name")) {
        for (const auto& [output, value] : loss.items()) compile.loss_by_output[output] = loss_from_keras(value, what);
    } else if (loss.is_array()) {
        for (const auto& value : loss) compile.loss.push_back(loss_from_keras(value, what));
    } else {
        compile.loss = {loss_from_keras(loss, what)};
    }
    metrics_from_keras(field_or_null(settings, "metrics"), model, compile, what);
    auto weight = [&](const nlohmann::json& value) {
        if (!value.is_number()) fail(what, "compile config: loss weights must be numbers, got " + json::excerpt(value) + skip_compile_hint);
        return value.get<double>();
    };
    if (loss_weights.is_array()) {
        for (const auto& value : loss_weights) compile.loss_weights.push_back(weight(value));
    } else if (loss_weights.is_object()) {
        for (const auto& [output, value] : loss_weights.items()) compile.loss_weights_by_output[output] = weight(value);
    } else if (!loss_weights.is_null()) {
        fail(what, "compile config: loss_weights must be a list or a map, got " + json::excerpt(loss_weights) + skip_compile_hint);
    }
    try {
        model.compile(compile);
    } catch (const Error& e) {
        fail(what, std::string("compile config: ") + e.what() + skip_compile_hint);
    }
}


nlohmann::json keras3_compile_config(const Model& model) {
    const CompileOptions& compile = model.compile_options();
    const auto outputs = model.output_names();
    nlohmann::json optimizer_config = model.optimizer()->config();
    const std::string name = optimizer_config["name"].get<std::string>();
    const std::map<std::string, std::string> class_names = {{"adam", "Adam"}, {"sgd", "SGD"}, {"rmsprop", "RMSprop"}};
    const auto class_name = class_names.count(name) ? class_names.at(name) : name;
    nlohmann::json loss, metrics, loss_weights;
    if (outputs.size() == 1) {
        loss = compile.loss.empty() ? nlohmann::json(compile.loss_by_output.begin()->second) : nlohmann::json(compile.loss[0]);
        metrics = compile.metrics;
        if (compile.metrics_by_output.count(outputs[0])) {
            for (const auto& metric : compile.metrics_by_output.at(outputs[0])) metrics.push_back(metric);
        }
    } else {
        // Keras 3 takes several outputs' settings best by output name.
        loss = nlohmann::json::object();
        metrics = nlohmann::json::object();
        for (std::size_t o = 0; o < outputs.size(); ++o) {
            const auto& output = outputs[o];
            loss[output] = compile.loss_by_output.count(output) ? compile.loss_by_output.at(output)
                                                                : compile.loss[compile.loss.size() == 1 ? 0 : o];
            nlohmann::json list = compile.metrics;
            if (compile.metrics_by_output.count(output)) {
                for (const auto& metric : compile.metrics_by_output.at(output)) list.push_back(metric);
            }
            metrics[output] = list;
        }
    }
    if (!compile.loss_weights.empty()) loss_weights = compile.loss_weights;
    if (!compile.loss_weights_by_output.empty()) loss_weights = compile.loss_weights_by_output;
    return {{"optimizer", {{"module", "keras.optimizers"}, {"class_name", class_name}, {"config", optimizer_config}, {"registered_name", nullptr}}},
            {"loss", loss},
            {"loss_weights", loss_weights},
            {"metrics", metrics},
            {"weighted_metrics", nullptr},
            {"run_eagerly", false},
            {"steps_per_execution", 1},
            {"jit_compile", false}};
}

}  // namespace xtnn::keras
