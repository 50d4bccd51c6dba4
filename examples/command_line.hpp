#pragma once
// The example programs' command lines, parsed by CLI11 in one source file (command_line.cpp):
// CLI11 is header-only and costs about 10 s of compiling in every program that includes it.
//
//   command_line::Parser args{"Train the book's MLP"};
//   args.option("--epochs", epochs, "training epochs");
//   if (auto exit_code = args.parse(argc, argv)) return *exit_code;

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace command_line {

class Parser {
public:
    explicit Parser(const std::string& description);
    ~Parser();
    Parser(const Parser&) = delete;
    Parser& operator=(const Parser&) = delete;

    /// `name` is "--flag" for an option, a bare word for a positional argument. Values of type
    /// std::string, std::vector<std::string>, double, int and the unsigned integers.
    template <class T>
    Parser& option(const std::string& name, T& value, const std::string& help = "");
    /// An option without a value: `value` becomes true when it is given.
    Parser& flag(const std::string& name, bool& value, const std::string& help = "");
    /// The option added last must be given.
    Parser& required();
    /// The option added last takes one of `choices`.
    Parser& one_of(const std::vector<std::string>& choices);

    /// Nothing when the program goes on; the exit code for main to return otherwise (0 after
    /// --help, non-zero after an error, which is printed).
    std::optional<int> parse(int argc, char** argv);

private:
    std::unique_ptr<CLI::App> app_;
    CLI::Option* last_ = nullptr;
};

}  // namespace command_line
