// Run and model configuration: TOML files plus `--set key=value` overrides.
//
// Readers ask for typed values with defaults (`cfg.get_int("train.steps", 1000)`); every key read is recorded with
// its effective value, so that (1) the resolved config — file values, overrides and defaults — can be dumped into
// the run directory, and (2) keys that were given but never read are reported as unknown (typos do not pass
// silently). Messages name the key, where it came from, and the allowed values.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace iomm {

class Config {
 public:
  Config();
  ~Config();
  Config(Config&&) noexcept;
  Config& operator=(Config&&) noexcept;
  Config(const Config&);
  Config& operator=(const Config&);

  // A TOML file. A top-level `base = "other.toml"` (relative to the file) loads that file first and merges this
  // one on top, so configs that share settings (the training stages) keep them in one base file.
  static Config load(const std::string& path);
  static Config parse(const std::string& toml_text, const std::string& source_name = "<string>");

  // Merges another config on top of this one (tables merge key by key; later wins).
  void merge(const Config& over);
  // "a.b.c=value": value is parsed as a TOML value (42, 1e-4, true, "x", [1, 2]); anything that is not valid TOML
  // is taken as a bare string, so `--set data.path=/x/y` works without quotes.
  void set(const std::string& assignment);

  bool has(const std::string& key) const;
  // Removes a key from the input (no-op when absent).
  void erase(const std::string& key);
  int64_t get_int(const std::string& key, int64_t def, int64_t min = INT64_MIN, int64_t max = INT64_MAX);
  double get_double(const std::string& key, double def, double min = -1e300, double max = 1e300);
  bool get_bool(const std::string& key, bool def);
  std::string get_string(const std::string& key, const std::string& def);
  std::string get_choice(const std::string& key, const std::string& def, const std::vector<std::string>& allowed);
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& def);
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& def);
  std::vector<std::string> get_string_list(const std::string& key, const std::vector<std::string>& def);

  // The top-level keys of the input, in order.
  std::vector<std::string> top_level_keys() const;
  // Every leaf under the table `table` as "dotted.key=value" (key relative to the table), the value as TOML text
  // that set() reads back to the same value (floats in their shortest round-trip form: "0.45", not
  // "0.45000000000000001"). Fails when `table` is not a table.
  std::vector<std::string> assignments(const std::string& table) const;

  // Every key present in the input under `prefix` (or everywhere, if empty) that no getter read.
  std::vector<std::string> unused_keys(const std::string& prefix = "") const;
  // Fails with the list of unknown keys, and for each the keys that were read in the same table.
  void check_unused(const std::string& prefix = "") const;

  // TOML text of every value read (with defaults filled in) — the resolved config.
  std::string dump_resolved() const;
  // The same, restricted to the given top-level tables (e.g. {"model", "generator", "conditioner"}).
  std::string dump_resolved(const std::vector<std::string>& tables) const;
  // Writes dump_resolved() to `path` atomically.
  void write_resolved(const std::string& path) const;
  // The input as given (files + overrides), as TOML.
  std::string dump_input() const;

  const std::string& source() const;

  struct Impl;  // toml++ stays out of this header

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace iomm
