#include "core/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "core/error.h"
#include "core/fs.h"

namespace iomm {

struct Config::Impl {
  toml::table input;     // what the files and overrides said
  toml::table resolved;  // what readers used (defaults included)
  std::set<std::string> read_keys;
  std::string source = "<empty>";
};

namespace {

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : key) {
    if (c == '.') {
      if (cur.empty()) fail("config key '{}' has an empty component", key);
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (cur.empty()) fail("config key '{}' has an empty component", key);
  parts.push_back(cur);
  return parts;
}

const toml::node* find(const toml::table& t, const std::string& key) {
  const toml::table* tab = &t;
  auto parts = split_key(key);
  for (size_t i = 0; i < parts.size(); ++i) {
    const toml::node* n = tab->get(parts[i]);
    if (!n) return nullptr;
    if (i + 1 == parts.size()) return n;
    tab = n->as_table();
    if (!tab) return nullptr;
  }
  return nullptr;
}

// Creates intermediate tables as needed and stores `value` at `key`.
template <typename T>
void put(toml::table& t, const std::string& key, T&& value) {
  toml::table* tab = &t;
  auto parts = split_key(key);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* n = tab->get(parts[i]);
    if (!n) {
      tab->insert_or_assign(parts[i], toml::table{});
      n = tab->get(parts[i]);
    }
    if (!n->is_table()) fail("config key '{}': '{}' is a value, not a table", key, parts[i]);
    tab = n->as_table();
  }
  tab->insert_or_assign(parts.back(), std::forward<T>(value));
}

void merge_tables(toml::table& dst, const toml::table& src) {
  for (auto&& [k, v] : src) {
    toml::node* d = dst.get(k);
    if (d && d->is_table() && v.is_table()) {
      merge_tables(*d->as_table(), *v.as_table());
    } else {
      dst.insert_or_assign(k, v);
    }
  }
}

void collect_leaf_keys(const toml::table& t, const std::string& prefix, std::vector<std::string>& out) {
  for (auto&& [k, v] : t) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (auto* sub = v.as_table())
      collect_leaf_keys(*sub, key, out);
    else
      out.push_back(key);
  }
}

std::string describe(const toml::node& n) {
  std::ostringstream os;
  if (n.is_string())
    os << '"' << n.value<std::string>().value_or("") << '"';
  else if (n.is_table())
    os << "a table";
  else
    n.visit([&](auto&& v) { os << v; });
  return os.str();
}

}  // namespace

Config::Config() : impl_(std::make_unique<Impl>()) {}
Config::~Config() = default;
Config::Config(Config&&) noexcept = default;
Config& Config::operator=(Config&&) noexcept = default;
Config::Config(const Config& o) : impl_(std::make_unique<Impl>(*o.impl_)) {}
Config& Config::operator=(const Config& o) {
  impl_ = std::make_unique<Impl>(*o.impl_);
  return *this;
}

Config Config::parse(const std::string& text, const std::string& source_name) {
  Config c;
  try {
    c.impl_->input = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    fail("{}:{}:{}: invalid TOML: {}", source_name, b.line, b.column, e.description());
  }
  c.impl_->source = source_name;
  return c;
}

namespace {

Config load_file(const std::string& path, std::vector<std::string>& chain) {
  if (std::find(chain.begin(), chain.end(), path) != chain.end())
    fail("{}: `base` files include each other in a cycle ({}); remove one of the `base` keys", path,
         fmt::join(chain, " -> "));
  std::ifstream in(path);
  if (!in) fail("cannot read config file '{}': check the path (configs live under configs/)", path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto own = Config::parse(ss.str(), path);
  if (!own.has("base")) return own;
  // `base = "file.toml"` or a list of files (relative to this file): those first, in order, this one on top. One
  // base per family of configs keeps the settings the stages share in one place; a list composes a model with a
  // stage (bench/configs/tiny.toml).
  auto peek = toml::parse(ss.str(), path);
  auto bases = peek["base"].is_string() ? std::vector<std::string>{own.get_string("base", "")}
                                        : own.get_string_list("base", {});
  if (bases.empty() || std::find(bases.begin(), bases.end(), "") != bases.end())
    fail("{}: base must name a TOML file or a list of them (relative to this one)", path);
  chain.push_back(path);
  Config merged;
  for (auto& base : bases)
    merged.merge(load_file((std::filesystem::path(path).parent_path() / base).lexically_normal().string(), chain));
  chain.pop_back();
  merged.merge(own);
  merged.erase("base");
  return merged;
}

}  // namespace

Config Config::load(const std::string& path) {
  std::vector<std::string> chain;
  return load_file(path, chain);
}

void Config::erase(const std::string& key) {
  toml::table* tab = &impl_->input;
  auto parts = split_key(key);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    tab = tab->get_as<toml::table>(parts[i]);
    if (!tab) return;
  }
  tab->erase(parts.back());
  impl_->read_keys.erase(key);
}

void Config::merge(const Config& over) {
  merge_tables(impl_->input, over.impl_->input);
  impl_->source = impl_->source == "<empty>" ? over.impl_->source : impl_->source + " + " + over.impl_->source;
}

void Config::set(const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--set '{}': expected key=value, e.g. --set optim.lr=1e-4", assignment);
  std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  try {
    toml::table t = toml::parse("v = " + value);
    put(impl_->input, key, *t.get("v"));
  } catch (const toml::parse_error&) {
    put(impl_->input, key, value);  // a bare string such as a path
  }
  impl_->source = (impl_->source == "<empty>" ? "" : impl_->source + " + ") + "--set " + key;
}

bool Config::has(const std::string& key) const { return find(impl_->input, key) != nullptr; }

int64_t Config::get_int(const std::string& key, int64_t def, int64_t min, int64_t max) {
  impl_->read_keys.insert(key);
  int64_t v = def;
  if (const toml::node* n = find(impl_->input, key)) {
    auto x = n->value_exact<int64_t>();
    if (!x) fail("config key '{}' ({}): expected an integer, got {}", key, impl_->source, describe(*n));
    v = *x;
  }
  if (v < min || v > max)
    fail("config key '{}' ({}): {} is out of range; allowed {} .. {}", key, impl_->source, v, min, max);
  put(impl_->resolved, key, v);
  return v;
}

double Config::get_double(const std::string& key, double def, double min, double max) {
  impl_->read_keys.insert(key);
  double v = def;
  if (const toml::node* n = find(impl_->input, key)) {
    auto x = n->value<double>();  // integers are accepted as floats
    if (!x || n->is_boolean())
      fail("config key '{}' ({}): expected a number, got {}", key, impl_->source, describe(*n));
    v = *x;
  }
  if (!std::isfinite(v) || v < min || v > max)
    fail("config key '{}' ({}): {} is out of range; allowed {} .. {}", key, impl_->source, v, min, max);
  put(impl_->resolved, key, v);
  return v;
}

bool Config::get_bool(const std::string& key, bool def) {
  impl_->read_keys.insert(key);
  bool v = def;
  if (const toml::node* n = find(impl_->input, key)) {
    auto x = n->value_exact<bool>();
    if (!x) fail("config key '{}' ({}): expected true or false, got {}", key, impl_->source, describe(*n));
    v = *x;
  }
  put(impl_->resolved, key, v);
  return v;
}

std::string Config::get_string(const std::string& key, const std::string& def) {
  impl_->read_keys.insert(key);
  std::string v = def;
  if (const toml::node* n = find(impl_->input, key)) {
    auto x = n->value_exact<std::string>();
    if (!x) fail("config key '{}' ({}): expected a string, got {}", key, impl_->source, describe(*n));
    v = *x;
  }
  put(impl_->resolved, key, v);
  return v;
}

std::string Config::get_choice(const std::string& key, const std::string& def,
                               const std::vector<std::string>& allowed) {
  std::string v = get_string(key, def);
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    fail("config key '{}' ({}): '{}' is not allowed; choose one of: {}", key, impl_->source, v, list);
  }
  return v;
}

template <typename T>
static std::vector<T> get_list(Config::Impl& impl, const std::string& key, const std::vector<T>& def,
                               const char* what) {
  impl.read_keys.insert(key);
  std::vector<T> v = def;
  if (const toml::node* n = find(impl.input, key)) {
    const toml::array* arr = n->as_array();
    if (!arr) fail("config key '{}' ({}): expected a list of {}, got {}", key, impl.source, what, describe(*n));
    v.clear();
    for (size_t i = 0; i < arr->size(); ++i) {
      std::optional<T> x;
      if constexpr (std::is_same_v<T, double>)
        x = (*arr)[i].is_boolean() ? std::nullopt : (*arr)[i].value<double>();
      else
        x = (*arr)[i].value_exact<T>();
      if (!x) fail("config key '{}' ({}): element {} is not {}", key, impl.source, i, what);
      v.push_back(*x);
    }
  }
  toml::array out;
  for (auto& x : v) out.push_back(x);
  put(impl.resolved, key, std::move(out));
  return v;
}

std::vector<int64_t> Config::get_int_list(const std::string& key, const std::vector<int64_t>& def) {
  return get_list<int64_t>(*impl_, key, def, "integers");
}
std::vector<double> Config::get_double_list(const std::string& key, const std::vector<double>& def) {
  return get_list<double>(*impl_, key, def, "numbers");
}
std::vector<std::string> Config::get_string_list(const std::string& key, const std::vector<std::string>& def) {
  return get_list<std::string>(*impl_, key, def, "strings");
}

std::vector<std::string> Config::unused_keys(const std::string& prefix) const {
  std::vector<std::string> all, out;
  collect_leaf_keys(impl_->input, "", all);
  for (auto& k : all) {
    if (!prefix.empty() && k.rfind(prefix, 0) != 0) continue;
    if (!impl_->read_keys.count(k)) out.push_back(k);
  }
  return out;
}

void Config::check_unused(const std::string& prefix) const {
  auto unused = unused_keys(prefix);
  if (unused.empty()) return;
  std::string msg;
  for (auto& k : unused) {
    auto dot = k.rfind('.');
    std::string table = dot == std::string::npos ? "" : k.substr(0, dot + 1);
    std::string known;
    for (auto& r : impl_->read_keys)
      if (r.rfind(table, 0) == 0 && r.find('.', table.size()) == std::string::npos)
        known += (known.empty() ? "" : ", ") + r.substr(table.size());
    msg += fmt::format("\n  '{}'{}", k, known.empty() ? "" : " (known keys here: " + known + ")");
  }
  fail("unknown config keys in {} — fix the spelling or remove them:{}", impl_->source, msg);
}

std::string Config::dump_resolved() const {
  std::ostringstream os;
  os << impl_->resolved;
  return os.str() + "\n";
}

std::string Config::dump_resolved(const std::vector<std::string>& tables) const {
  toml::table part;
  for (const auto& t : tables)
    if (auto* node = impl_->resolved.get(t)) part.insert(t, *node);
  std::ostringstream os;
  os << part;
  return os.str() + "\n";
}

std::string Config::dump_input() const {
  std::ostringstream os;
  os << impl_->input;
  return os.str() + "\n";
}

void Config::write_resolved(const std::string& path) const {
  write_file_atomic(path, "# resolved iomm config (files + --set overrides + defaults)\n" + dump_resolved());
}

const std::string& Config::source() const { return impl_->source; }

namespace {

// A TOML value as assignment text, floats in their shortest round-trip form and still spelled as floats.
std::string toml_value_text(const toml::node& v) {
  if (auto d = v.value_exact<double>()) {
    std::string s = fmt::format("{}", *d);
    if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "1" would read back as an integer
    return s;
  }
  std::ostringstream os;
  v.visit([&](auto& n) { os << n; });
  return os.str();
}

void flatten(const toml::table& t, const std::string& prefix, std::vector<std::string>& out) {
  for (auto& [k, v] : t) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (v.is_table())
      flatten(*v.as_table(), key, out);
    else
      out.push_back(key + "=" + toml_value_text(v));
  }
}

}  // namespace

std::vector<std::string> Config::top_level_keys() const {
  std::vector<std::string> out;
  for (auto& [k, v] : impl_->input) out.emplace_back(k.str());
  return out;
}

std::vector<std::string> Config::assignments(const std::string& table) const {
  const toml::node* n = find(impl_->input, table);
  if (!n || !n->is_table()) fail("{}: '{}' must be a table of key = value settings", impl_->source, table);
  std::vector<std::string> out;
  flatten(*n->as_table(), "", out);
  return out;
}

}  // namespace iomm
