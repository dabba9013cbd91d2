// Subcommand registry for the `iomm` binary. Each src/cli/cmd_*.cpp registers itself with a static
// Command object, so adding a subcommand touches no shared file.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace iomm::cli {

struct Command {
  std::string name;
  std::string help;
  // Adds options to `app` and returns the action to run when the subcommand is chosen.
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<Command>& registry();

struct Register {
  explicit Register(Command c) { registry().push_back(std::move(c)); }
};

}  // namespace iomm::cli

namespace iomm {
class Config;
}

namespace iomm::cli {

// The `--config FILE` (repeatable, later files win) and `--set key=value` (repeatable) options every
// config-driven subcommand takes.
struct ConfigArgs {
  std::vector<std::string> files;
  std::vector<std::string> overrides;
  void add_to(CLI::App& app);
  Config load() const;
};

}  // namespace iomm::cli
