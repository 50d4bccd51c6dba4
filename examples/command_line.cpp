#include "command_line.hpp"

#include <CLI/CLI.hpp>

namespace command_line {

Parser::Parser(const std::string& description) : app_(std::make_unique<CLI::App>(description)) {}

Parser::~Parser() = default;

template <class T>
Parser& Parser::option(const std::string& name, T& value, const std::string& help) {
    last_ = app_->add_option(name, value, help);
    return *this;
}

// The integer types by their own names: std::size_t and std::uint64_t are one of these on every
// platform, but not the same one everywhere.
template Parser& Parser::option(const std::string&, int&, const std::string&);
template Parser& Parser::option(const std::string&, unsigned&, const std::string&);
template Parser& Parser::option(const std::string&, unsigned long&, const std::string&);
template Parser& Parser::option(const std::string&, unsigned long long&, const std::string&);
template Parser& Parser::option(const std::string&, double&, const std::string&);
template Parser& Parser::option(const std::string&, std::string&, const std::string&);
template Parser& Parser::option(const std::string&, std::vector<std::string>&, const std::string&);

Parser& Parser::flag(const std::string& name, bool& value, const std::string& help) {
    last_ = app_->add_flag(name, value, help);
    return *this;
}

Parser& Parser::required() {
    last_->required();
    return *this;
}

Parser& Parser::one_of(const std::vector<std::string>& choices) {
    last_->check(CLI::IsMember(choices));
    return *this;
}

std::optional<int> Parser::parse(int argc, char** argv) {
    try {
        app_->parse(argc, argv);
    } catch (const CLI::ParseError& error) {
        return app_->exit(error);
    }
    return std::nullopt;
}

}  // namespace command_line
