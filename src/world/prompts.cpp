#include "world/prompts.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/json_limits.h"

namespace iomm::world {

namespace {

// The built-in sets and the held-out pairs come from this fixed seed (GenEval's default seed), never from
// the corpus seed, so every corpus holds out the same things.
constexpr uint64_t kPromptSeed = 43;

template <typename T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

Requirement req(Shape s, int count, std::optional<Color> c = std::nullopt) {
  Requirement r{name(s), count, std::nullopt, std::nullopt};
  if (c) r.color = name(*c);
  return r;
}

std::string colored(Color c, Shape s) { return std::string(name(c)) + " " + name(s); }

struct Builtin {
  std::vector<PromptSpec> eval, small;
  std::set<std::string> pairs, strings;
};

const Builtin& builtin() {
  static const Builtin b = [] {
    Builtin b;
    Rng rng(kPromptSeed, hash_name("heldout-pairs"));
    // Colour-attribution pairs: 6 unordered class pairs x 20 ordered colour pairs = 120; hold out 40.
    struct Pair { Shape a, b; Color ca, cb; };
    std::vector<Pair> all;
    for (size_t i = 0; i < kShapes.size(); ++i)
      for (size_t j = i + 1; j < kShapes.size(); ++j)
        for (Color ca : kColors)
          for (Color cb : kColors)
            if (ca != cb) all.push_back({kShapes[i], kShapes[j], ca, cb});
    shuffle(all, rng);
    all.resize(40);

    std::vector<std::vector<PromptSpec>> cats(6);
    for (Shape s : kShapes)
      cats[0].push_back({"single_object", {req(s, 1)}, {}, "a photo of " + with_article(name(s)), {}});
    for (Shape a : kShapes)
      for (Shape b : kShapes)
        if (a != b)
          cats[1].push_back({"two_object", {req(a, 1), req(b, 1)}, {},
                             "a photo of " + with_article(name(a)) + " and " + with_article(name(b)), {}});
    for (Shape s : kShapes)
      for (int n = 2; n <= 4; ++n)
        cats[2].push_back({"counting", {req(s, n)}, {req(s, n + 1)},
                           "a photo of " + number_word(n) + " " + plural(name(s)), {}});
    for (Shape s : kShapes)
      for (Color c : kColors)
        cats[3].push_back({"colors", {req(s, 1, c)}, {}, "a photo of " + with_article(colored(c, s)), {}});
    for (Shape a : kShapes)
      for (Shape bb : kShapes)
        if (a != bb)
          for (const char* rel : kRelations) {
            Requirement ra = req(a, 1);
            ra.position = std::make_pair(std::string(rel), 0);
            cats[4].push_back({"position", {req(bb, 1), ra}, {},
                               "a photo of " + with_article(name(a)) + " " + rel + " " + with_article(name(bb)), {}});
          }
    for (const auto& p : all) {
      b.pairs.insert(pair_key(p.ca, p.a, p.cb, p.b));
      for (int order = 0; order < 2; ++order) {
        Shape a = order ? p.b : p.a, bb = order ? p.a : p.b;
        Color ca = order ? p.cb : p.ca, cb = order ? p.ca : p.cb;
        cats[5].push_back({"color_attr", {req(a, 1, ca), req(bb, 1, cb)}, {},
                           "a photo of " + with_article(colored(ca, a)) + " and " + with_article(colored(cb, bb)),
                           {}});
      }
    }
    Rng pick(kPromptSeed, hash_name("eval-small"));
    for (auto& cat : cats) {
      b.eval.insert(b.eval.end(), cat.begin(), cat.end());
      std::vector<size_t> idx(cat.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
      shuffle(idx, pick);
      idx.resize(std::min<size_t>(4, idx.size()));
      std::sort(idx.begin(), idx.end());
      for (size_t i : idx) b.small.push_back(cat[i]);
    }
    for (const auto& p : b.eval) b.strings.insert(p.prompt);
    return b;
  }();
  return b;
}

std::array<double, 4> box(const Object& o) { return {o.x, o.y, o.x + o.size, o.y + o.size}; }

// Boxes a and b are apart by at least `gap` along x or along y.
bool separated(const Object& a, const Object& b, double gap) {
  return std::max({b.x - (a.x + a.size), a.x - (b.x + b.size), b.y - (a.y + a.size), a.y - (b.y + b.size)}) >= gap;
}

}  // namespace

std::string with_article(const std::string& noun) {
  return (std::string("aeiou").find(noun.at(0)) != std::string::npos ? "an " : "a ") + noun;
}
std::string plural(const std::string& noun) { return noun + (noun.back() == 's' ? "es" : "s"); }
std::string number_word(int n) {
  static const char* w[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"};
  if (n < 0 || n > 10) fail("number_word: {} is outside 0..10", n);
  return w[n];
}

std::string pair_key(Color ca, Shape sa, Color cb, Shape sb) {
  std::string x = colored(ca, sa), y = colored(cb, sb);
  return x < y ? x + "|" + y : y + "|" + x;
}

std::vector<PromptSpec> builtin_prompts(const std::string& name) {
  if (name == "eval") return builtin().eval;
  if (name == "eval-small") return builtin().small;
  fail("unknown built-in prompt set '{}': choose eval or eval-small", name);
}
const std::set<std::string>& heldout_prompt_strings() { return builtin().strings; }
const std::set<std::string>& heldout_color_pairs() { return builtin().pairs; }

// ---- JSON ----

namespace {

// Typed reads of one metadata line: every error names the line, the field and what it must be. nlohmann's own
// get<int>() turned 1.5, true and 2^32+1 into 1.
struct MetaReader {
  const std::string& where;

  const nlohmann::json& need(const nlohmann::json& o, const char* field, const std::string& path) const {
    if (!o.is_object() || !o.contains(field))
      fail("{}: missing field '{}' (GenEval metadata form)", where, path.empty() ? field : path + "." + field);
    return o[field];
  }
  std::string str(const nlohmann::json& v, const std::string& path) const {
    if (!v.is_string()) wrong(v, path, "a string");
    return v.get<std::string>();
  }
  int integer(const nlohmann::json& v, const std::string& path, int lo, int hi) const {
    bool ok = false;  // JSON's non-negative integers are unsigned: compare without wrapping 2^64 - 1 to -1
    if (v.is_number_unsigned())
      ok = v.get<uint64_t>() <= uint64_t(hi) && int64_t(v.get<uint64_t>()) >= lo;
    else if (v.is_number_integer())
      ok = v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!ok) wrong(v, path, fmt::format("an integer from {} to {}", lo, hi));
    return v.get<int>();
  }
  [[noreturn]] void wrong(const nlohmann::json& v, const std::string& path, const std::string& expected) const {
    fail("{}: field '{}' must be {}, got {}; fix the line (GenEval metadata form: {{\"class\": \"circle\", "
         "\"count\": 2}})",
         where, path, expected, v.dump().substr(0, 40));
  }
};

// GenEval asks for at most a handful of objects; the bound keeps a typo from allocating 2^31 layout slots.
constexpr int kMaxCount = 100;

Requirement requirement_from_json(const nlohmann::json& r, const std::string& path, int earlier, const MetaReader& m) {
  if (!r.is_object()) m.wrong(r, path, "an object");
  Requirement q;
  q.cls = m.str(m.need(r, "class", path), path + ".class");
  q.count = m.integer(m.need(r, "count", path), path + ".count", 1, kMaxCount);
  if (r.contains("color")) q.color = m.str(r["color"], path + ".color");
  if (r.contains("position")) {
    const auto& p = r["position"];
    if (!p.is_array() || p.size() != 2) m.wrong(p, path + ".position", "[relation, include index], e.g. [\"left of\", 0]");
    q.position = std::make_pair(m.str(p[0], path + ".position[0]"), m.integer(p[1], path + ".position[1]", 0, kMaxCount));
    if (std::find(kRelations.begin(), kRelations.end(), q.position->first) == kRelations.end())
      fail("{}: unknown relation '{}': use left of, right of, above, below", m.where, q.position->first);
    if (q.position->second >= earlier)
      fail("{}: position target {} must name an earlier include entry", m.where, q.position->second);
  }
  return q;
}

}  // namespace

PromptSpec prompt_from_json(const nlohmann::json& j, const std::string& where) {
  const MetaReader m{where};
  auto reqs = [&](const nlohmann::json& arr, const std::string& field) {
    std::vector<Requirement> out;
    if (!arr.is_array()) fail("{}: '{}' must be a list", where, field);
    for (size_t i = 0; i < arr.size(); ++i)
      out.push_back(requirement_from_json(arr[i], fmt::format("{}[{}]", field, i), int(out.size()), m));
    return out;
  };
  PromptSpec p;
  p.tag = m.str(m.need(j, "tag", ""), "tag");
  p.prompt = m.str(m.need(j, "prompt", ""), "prompt");
  p.include = reqs(m.need(j, "include", ""), "include");
  if (j.contains("exclude")) p.exclude = reqs(j["exclude"], "exclude");
  return p;
}

nlohmann::ordered_json to_json(const PromptSpec& p) {
  if (!p.raw.is_null()) return p.raw;
  auto reqs = [](const std::vector<Requirement>& rs) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const auto& r : rs) {
      nlohmann::ordered_json o{{"class", r.cls}, {"count", r.count}};
      if (r.color) o["color"] = *r.color;
      if (r.position) o["position"] = {r.position->first, r.position->second};
      a.push_back(o);
    }
    return a;
  };
  nlohmann::ordered_json j{{"tag", p.tag}, {"include", reqs(p.include)}};
  if (!p.exclude.empty()) j["exclude"] = reqs(p.exclude);
  j["prompt"] = p.prompt;
  return j;
}

std::vector<std::pair<int, PromptSpec>> read_prompts_with_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open prompt file '{}': pass a GenEval-style metadata.jsonl (see `iomm world make`)", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_prompt_lines(text.str(), path);
}

std::vector<std::pair<int, PromptSpec>> parse_prompt_lines(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  std::vector<std::pair<int, PromptSpec>> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, n);
    check_json_nesting(line, where);  // to_json() copies `raw`, recursively
    nlohmann::ordered_json raw;
    try {
      raw = nlohmann::ordered_json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not valid JSON ({})", where, e.what());
    }
    PromptSpec p = prompt_from_json(nlohmann::json::parse(line), where);
    p.raw = std::move(raw);
    out.emplace_back(n, std::move(p));
  }
  if (out.empty()) fail("prompt file '{}' holds no prompts", path);
  return out;
}

std::vector<PromptSpec> read_prompts(const std::string& path) {
  std::vector<PromptSpec> out;
  for (auto& [line, p] : read_prompts_with_lines(path)) out.push_back(std::move(p));
  return out;
}

void write_prompts(const std::vector<PromptSpec>& prompts, const std::string& path) {
  std::string text;
  for (const auto& p : prompts) text += to_json(p).dump() + "\n";
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_file_atomic(path, text);
}

// ---- geometry ----

std::set<std::string> relative_position(const std::array<double, 4>& a, const std::array<double, 4>& b,
                                        double threshold) {
  const double ca[2] = {(a[0] + a[2]) / 2, (a[1] + a[3]) / 2}, cb[2] = {(b[0] + b[2]) / 2, (b[1] + b[3]) / 2};
  const double da[2] = {std::abs(a[2] - a[0]), std::abs(a[3] - a[1])};
  const double db[2] = {std::abs(b[2] - b[0]), std::abs(b[3] - b[1])};
  double off[2], rev[2];
  for (int k = 0; k < 2; ++k) {
    off[k] = ca[k] - cb[k];
    const double sign = off[k] > 0 ? 1.0 : off[k] < 0 ? -1.0 : 0.0;
    rev[k] = std::max(std::abs(off[k]) - threshold * (da[k] + db[k]), 0.0) * sign;
  }
  if (std::abs(rev[0]) < 1e-3 && std::abs(rev[1]) < 1e-3) return {};
  const double norm = std::sqrt(off[0] * off[0] + off[1] * off[1]);
  const double dx = rev[0] / norm, dy = rev[1] / norm;
  std::set<std::string> rels;
  if (dx < -0.5) rels.insert("left of");
  if (dx > 0.5) rels.insert("right of");
  if (dy < -0.5) rels.insert("above");
  if (dy > 0.5) rels.insert("below");
  return rels;
}

std::vector<Slot> slots_for_prompt(const PromptSpec& p, Rng& rng) {
  std::vector<Slot> slots;
  std::vector<int> first_of_group;
  for (const auto& r : p.include) {
    first_of_group.push_back(int(slots.size()));
    for (int k = 0; k < r.count; ++k) {
      Slot s{parse_shape(r.cls), r.color ? parse_color(*r.color) : kColors[rng.below(kColors.size())], -1, ""};
      if (r.position) {
        s.relative_to = first_of_group.at(r.position->second);
        s.relation = r.position->first;
      }
      slots.push_back(s);
    }
  }
  return slots;
}

Scene layout(const std::vector<Slot>& slots, int size, Rng& rng) {
  if (size < 16) fail("scene size {} px is too small: use 32..64", size);
  Scene scene;
  scene.size = size;
  const auto g = uint8_t(rng.range(130, 185));
  scene.background = {g, g, g};
  const size_t n = slots.size();
  if (n == 0) return scene;
  // Object side as a fraction of the image, by how many objects share it; never below 9 px, so a shape keeps
  // its corners (the detector's cue) after blur.
  constexpr double kMinSide = 9.0;
  static const double kLo[] = {0.30, 0.25, 0.22, 0.20, 0.18}, kHi[] = {0.50, 0.40, 0.32, 0.28, 0.22};
  const size_t band = std::min<size_t>(n, 5) - 1;
  const double margin = std::max(3.0, 0.08 * size), border = 1.0;
  for (int restart = 0; restart < 400; ++restart) {
    double shrink = 1.0;  // a product, not std::pow: libm results may differ between platforms
    for (int k = 0; k < restart / 50; ++k) shrink *= 0.93;
    const double lo = std::max(kMinSide, kLo[band] * size * shrink), hi = std::max(lo, kHi[band] * size * shrink);
    scene.objects.clear();
    bool ok = true;
    for (size_t i = 0; i < n && ok; ++i) {
      const Slot& s = slots[i];
      Object o;
      o.shape = s.shape;
      o.color = s.color;
      const auto base = rgb(s.color);
      for (int c = 0; c < 3; ++c) o.fill[c] = uint8_t(std::clamp(int(base[c]) + rng.range(-12, 12), 0, 255));
      o.size = rng.uniform(lo, hi);
      ok = false;
      for (int attempt = 0; attempt < 100 && !ok; ++attempt) {
        o.x = rng.uniform(border, size - border - o.size);
        o.y = rng.uniform(border, size - border - o.size);
        ok = std::all_of(scene.objects.begin(), scene.objects.end(),
                         [&](const Object& p) { return separated(o, p, margin); });
        // Relations must hold by a wide margin (threshold 0.25 vs GenEval's 0.1), so blur cannot flip them.
        if (ok && s.relative_to >= 0)
          ok = relative_position(box(o), box(scene.objects.at(s.relative_to)), 0.25).count(s.relation) > 0;
      }
      if (ok) scene.objects.push_back(o);
    }
    if (ok) return scene;
  }
  fail("cannot place {} objects in a {} px image without overlaps: use fewer objects or a larger --size", n, size);
}

}  // namespace iomm::world
