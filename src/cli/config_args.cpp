#include "cli/command.h"
#include "core/config.h"

namespace iomm::cli {

void ConfigArgs::add_to(CLI::App& app) {
  app.add_option("--config", files, "TOML config file(s); later files override earlier ones")->check(CLI::ExistingFile);
  app.add_option("--set", overrides, "Override a config key, e.g. --set optim.lr=1e-4 (repeatable)");
}

Config ConfigArgs::load() const {
  Config cfg;
  for (auto& f : files) cfg.merge(Config::load(f));
  for (auto& o : overrides) cfg.set(o);
  return cfg;
}

}  // namespace iomm::cli
