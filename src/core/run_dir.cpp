#include "core/run_dir.h"

#include <filesystem>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"

namespace iomm {

namespace fs = std::filesystem;

RunDir RunDir::open(const std::string& path, bool resume) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) fail("cannot create run directory '{}': {}", path, ec.message());
  if (!resume && fs::exists(fs::path(path) / "config.toml"))
    fail("run directory '{}' already holds a run (config.toml exists): pass --resume to continue it, or choose "
         "another --out",
         path);
  return RunDir{path};
}

void RunDir::write_config(const Config& cfg) const {
  cfg.write_resolved(file("config.toml"));
  write_file_atomic(file("config.input.toml"), "# iomm config as given: " + cfg.source() + "\n" + cfg.dump_input());
}

void RunDir::attach_log(const std::string& name) const { log::set_run_file(file(name)); }

}  // namespace iomm
