#include "xtnn/json.hpp"

#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "xtnn/error.hpp"

namespace xtnn::json {

nlohmann::json parse(std::string_view text, const std::string& what) {
    std::vector<std::set<std::string>> open_objects;
    const nlohmann::json::parser_callback_t check = [&](int depth, nlohmann::json::parse_event_t event,
                                                         nlohmann::json& parsed) {
        using Event = nlohmann::json::parse_event_t;
        if (depth > static_cast<int>(max_depth)) {
            throw ValueError(fmt::format("{}: JSON nested deeper than {} levels", what, max_depth));
        }
        if (event == Event::object_start) open_objects.emplace_back();
        if (event == Event::object_end && !open_objects.empty()) open_objects.pop_back();
        if (event == Event::key && !open_objects.back().insert(parsed.get<std::string>()).second) {
            throw ValueError(what + ": duplicate key '" + parsed.get<std::string>() + "' in JSON");
        }
        return true;
    };
    try {
        return nlohmann::json::parse(text.begin(), text.end(), check);
    } catch (const nlohmann::json::exception& e) {
        // Parse errors, and numbers such as 1e400 that no double holds (out_of_range.406).
        throw ValueError(what + ": not valid JSON: " + e.what());
    }
}

void require_depth(const nlohmann::json& value, const std::string& what) {
    std::vector<std::pair<const nlohmann::json*, std::size_t>> pending{{&value, 1}};
    while (!pending.empty()) {
        const auto [node, depth] = pending.back();
        pending.pop_back();
        if (!node->is_structured()) continue;
        if (depth > max_depth) throw ValueError(fmt::format("{}: JSON nested deeper than {} levels", what, max_depth));
        for (const auto& child : *node) pending.emplace_back(&child, depth + 1);
    }
}

std::string excerpt(const nlohmann::json& value, std::size_t limit) {
    std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > limit) text = text.substr(0, limit) + "...";
    return text;
}

std::size_t whole_number(const nlohmann::json& value, std::size_t max, const std::string& what) {
    const bool whole = value.is_number_unsigned() || value.is_number_integer() ||
                       (value.is_number_float() && std::isfinite(value.get<double>()) &&
                        value.get<double>() == std::floor(value.get<double>()));
    const double as_double = value.is_number() ? value.get<double>() : -1.0;
    if (!whole || as_double < 0 || as_double > static_cast<double>(max) ||
        (value.is_number_integer() && !value.is_number_unsigned() && value.get<std::int64_t>() < 0)) {
        throw ValueError(fmt::format("{} must be a whole number in [0, {}], got {}", what, max, excerpt(value)));
    }
    return value.is_number_float() ? static_cast<std::size_t>(value.get<double>()) : value.get<std::size_t>();
}

}  // namespace xtnn::json
