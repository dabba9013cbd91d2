#include <algorithm>
#include <iostream>
#include <memory>

#include <c10/util/Exception.h>

#include "cli/command.h"
#include "core/error.h"
#include "core/log.h"

#include <spdlog/spdlog.h>

namespace iomm::cli {
std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}
}  // namespace iomm::cli

int main(int argc, char** argv) {
  using namespace iomm;
  CLI::App app{"iomm: image-only masked-modeling pre-training of a UMM image generator (IOMM, CVPR 2026)"};
  app.set_version_flag("--version", std::string("iomm ") + IOMM_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));

  auto& cmds = cli::registry();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::function<int()> action;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    auto run = std::make_shared<std::function<int()>>(c.setup(*sub));
    sub->callback([run, &action] { action = *run; });
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto report = [](const std::string& message) {  // stderr, and the run's log when one is attached
    std::cerr << message << "\n";
    log::fatal(message);
    return 1;
  };
  try {
    log::init(log_level);
    return action ? action() : 0;
  } catch (const c10::Error& e) {
    // libtorch's message without its C++ backtrace (25 frames that name no input of the user's); the backtrace
    // goes to the debug log for a bug report.
    spdlog::debug("libtorch backtrace:\n{}", e.what());
    return report(std::string("error: ") + e.what_without_backtrace() +
                  " (raised inside libtorch; --log-level debug prints its backtrace)");
  } catch (const std::exception& e) {  // iomm::Error and anything else
    return report(std::string("error: ") + e.what());
  }
}
