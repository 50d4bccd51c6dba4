#pragma once
// A name -> implementation table whose unknown-name error lists the known names.

#include <map>
#include <string>
#include <vector>

#include "xtnn/error.hpp"

namespace xtnn {

template <class Value>
class Registry {
public:
    /// `kind` names the table in errors: "activation", "loss", ...
    Registry(std::string kind, std::map<std::string, Value> entries)
        : kind_(std::move(kind)), entries_(std::move(entries)) {}

    const Value& get(const std::string& name) const {
        auto found = entries_.find(name);
        if (found == entries_.end()) {
            std::string known;
            for (const auto& entry : entries_) known += (known.empty() ? "" : ", ") + entry.first;
            const std::string kinds = kind_ + (kind_.ends_with("s") ? "es" : "s");
            throw ValueError("unknown " + kind_ + " '" + name + "'; known " + kinds + ": " + known);
        }
        return found->second;
    }

    bool contains(const std::string& name) const { return entries_.count(name) > 0; }

    std::vector<std::string> names() const {
        std::vector<std::string> result;
        for (const auto& entry : entries_) result.push_back(entry.first);
        return result;
    }

private:
    std::string kind_;
    std::map<std::string, Value> entries_;
};

}  // namespace xtnn
