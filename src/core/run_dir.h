// A run directory: where a training or generation run keeps its resolved config, logs, metrics, checkpoints and
// samples. Layout:
//   RUN/config.toml        resolved config (files + --set + defaults), written once readers have read it
//   RUN/config.input.toml  the config exactly as given
//   RUN/log.txt            a copy of the log
//   RUN/metrics.jsonl      one JSON object per line
#pragma once
#include <string>

namespace iomm {

class Config;

struct RunDir {
  std::string path;

  // Creates the directory (and parents); `resume` keeps existing files, otherwise a non-empty directory that
  // already holds a run is refused, so that nobody overwrites a day of training by accident.
  static RunDir open(const std::string& path, bool resume);

  std::string file(const std::string& name) const { return path + "/" + name; }
  // Dumps the resolved and the input config; call after every reader has read its keys.
  void write_config(const Config& cfg) const;
  // Mirrors the log into RUN/log.txt (or RUN/`name`: the other ranks of a data-parallel job keep their own).
  void attach_log(const std::string& name = "log.txt") const;
};

}  // namespace iomm
