#include "apps/serve_request.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace iomm {

using json = nlohmann::json;

namespace {

enum class Type { string, integer, unsigned_integer, number, boolean };

struct Field {
  const char* name;
  Type type;
};

// Every field a request may carry; anything else is refused (a typo must not be silently ignored).
const Field kFields[] = {
    {"prompt", Type::string},  {"n", Type::integer},        {"response_format", Type::string},
    {"seed", Type::unsigned_integer}, {"steps", Type::integer}, {"cfg_scale", Type::number},
    {"sampler", Type::string}, {"shift", Type::number},     {"stream", Type::boolean},
    {"preview", Type::boolean}, {"model", Type::string},    {"size", Type::string},
};

const char* type_name(Type t) {
  switch (t) {
    case Type::string: return "a string";
    case Type::integer: return "an integer";
    case Type::unsigned_integer: return "a non-negative integer";
    case Type::number: return "a number";
    case Type::boolean: return "true or false";
  }
  return "?";
}

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw RequestError(400, param + ": " + message, param);
}

const Field* find_field(const std::string& name) {
  for (const auto& f : kFields)
    if (name == f.name) return &f;
  return nullptr;
}

std::string allowed_list(bool edit) {
  std::string s = edit ? "image" : "";
  for (const auto& f : kFields) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

void check_known(const std::string& name, bool edit) {
  if (find_field(name)) return;
  if (name == "negative_prompt")
    bad(name, "iomm has no negative prompt (true CFG guides against the model's fixed unconditional prompt); "
              "remove the field");
  bad(name, fmt::format("unknown field; the fields are {}", allowed_list(edit)));
}

bool has_type(const json& v, Type t) {
  switch (t) {
    case Type::string: return v.is_string();
    case Type::integer: return v.is_number_integer();
    case Type::unsigned_integer: return v.is_number_unsigned();
    case Type::number: return v.is_number();
    case Type::boolean: return v.is_boolean();
  }
  return false;
}

// A multipart text field as the JSON value its field takes.
json typed(const Field& f, const std::string& text) {
  auto whole = [&](auto& v) {
    auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    return r.ec == std::errc() && r.ptr == text.data() + text.size() && !text.empty();
  };
  if (f.type == Type::integer) {
    int64_t v;
    if (whole(v)) return v;
  } else if (f.type == Type::unsigned_integer) {
    uint64_t v;
    if (whole(v)) return v;
  } else if (f.type == Type::number) {
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (!text.empty() && end == text.c_str() + text.size() && std::isfinite(v)) return v;
  } else if (f.type == Type::boolean) {
    if (text == "true" || text == "1") return true;
    if (text == "false" || text == "0") return false;
  } else {
    return text;
  }
  bad(f.name, fmt::format("'{}' is not {}", text, type_name(f.type)));
}

void check_prompt(const std::string& prompt, const ServeLimits& limits, bool edit) {
  const char* what = edit ? "the editing instruction" : "the text to draw";
  if (prompt.find_first_not_of(" \t\r\n") == std::string::npos) bad("prompt", fmt::format("empty; give {}", what));
  int64_t len = utf8_length(prompt);
  if (len < 0) bad("prompt", "not valid UTF-8 text; send the prompt encoded as UTF-8");
  if (len > limits.max_prompt_chars)
    bad("prompt", fmt::format("{} characters, over the limit of {} (the server's --max-prompt-chars); shorten it",
                              len, limits.max_prompt_chars));
}

void check_range(const char* param, int64_t v, int64_t lo, int64_t hi, const char* flag) {
  if (v < lo || v > hi)
    bad(param, fmt::format("{} is outside {}..{}{}", v, lo, hi,
                           *flag ? fmt::format(" (the upper limit is the server's {})", flag) : std::string()));
}

void apply_options(ImageRequest& r, const json& o, const ServeLimits& limits, const ServedModel& model);

ImageRequest from_object(const json& o, bool edit, const ServeLimits& limits, const ServedModel& model) {
  for (const auto& [name, value] : o.items()) {
    check_known(name, edit);
    const Field& f = *find_field(name);
    if (!has_type(value, f.type)) bad(name, fmt::format("expected {}, got {}", type_name(f.type), value.dump()));
  }
  ImageRequest r;
  r.task = edit ? "edit" : "generate";
  if (!o.contains("prompt"))
    bad("prompt", edit ? "missing; give the editing instruction" : "missing; give the text to draw");
  r.prompt = o["prompt"].get<std::string>();
  check_prompt(r.prompt, limits, edit);
  apply_options(r, o, limits, model);
  return r;
}

void apply_options(ImageRequest& r, const json& o, const ServeLimits& limits, const ServedModel& model) {
  if (o.contains("n")) r.n = o["n"].get<int64_t>();
  check_range("n", r.n, 1, limits.max_n, "--max-n");
  if (o.contains("response_format") && o["response_format"] != "b64_json")
    bad("response_format", "iomm serve returns images inline only; use \"b64_json\" (or leave the field out)");
  if (o.contains("seed")) {
    r.seed = o["seed"].get<uint64_t>();
    r.seed_given = true;
  }
  if (o.contains("steps")) r.steps = o["steps"].get<int64_t>();
  check_range("steps", r.steps, 1, limits.max_steps, "--max-steps");
  if (o.contains("cfg_scale")) r.cfg_scale = o["cfg_scale"].get<double>();
  if (!std::isfinite(r.cfg_scale)) bad("cfg_scale", "give a finite number (1 = no guidance, 4.5 = the default)");
  if (o.contains("sampler")) r.sampler = o["sampler"].get<std::string>();
  if (r.sampler != "euler" && r.sampler != "dpmpp_2m")
    bad("sampler", fmt::format("'{}' is not a sampler; use \"euler\" or \"dpmpp_2m\"", r.sampler));
  if (o.contains("shift")) r.shift = o["shift"].get<double>();
  if (!std::isfinite(r.shift) || r.shift <= 0) bad("shift", "give a number > 0 (1 = no shift, as trained)");
  if (o.contains("stream")) r.stream = o["stream"].get<bool>();
  if (o.contains("preview")) r.preview = o["preview"].get<bool>();
  if (o.contains("model") && o["model"] != model.id)
    bad("model", fmt::format("this server serves '{}' only (GET /v1/models)", model.id));
  std::string size = fmt::format("{}x{}", model.resolution, model.resolution);
  if (o.contains("size") && o["size"] != size)
    bad("size", fmt::format("the model draws {} images only; use \"{}\" or leave the field out", size, size));
}

}  // namespace

ImageRequest parse_generation_request(const std::string& body, const ServeLimits& limits, const ServedModel& model) {
  json o;
  try {
    o = json::parse(body);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large for a double
    throw RequestError(400, fmt::format("the body is not valid JSON ({}); send a JSON object such as "
                                        "{{\"prompt\": \"a red circle\"}}", e.what()));
  }
  if (!o.is_object())
    throw RequestError(400, "the body must be a JSON object such as {\"prompt\": \"a red circle\"}");
  return from_object(o, false, limits, model);
}

ImageRequest parse_edit_fields(const std::map<std::string, std::string>& fields, const ServeLimits& limits,
                               const ServedModel& model) {
  json o = json::object();
  for (const auto& [name, text] : fields) {
    check_known(name, true);
    o[name] = typed(*find_field(name), text);
  }
  return from_object(o, true, limits, model);
}

std::string error_body(const std::string& message, const std::string& type, const std::string& param) {
  json e = {{"message", message}, {"type", type}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  // Messages quote what the client sent (nlohmann's parse errors quote the bytes read), which may be invalid UTF-8:
  // replaced by U+FFFD here, where a strict dump() would throw and turn the 400 into a 500.
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string base64_encode(const uint8_t* data, size_t size) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    uint32_t v = uint32_t(data[i]) << 16;
    if (i + 1 < size) v |= uint32_t(data[i + 1]) << 8;
    if (i + 2 < size) v |= data[i + 2];
    out += abc[(v >> 18) & 63];
    out += abc[(v >> 12) & 63];
    out += i + 1 < size ? abc[(v >> 6) & 63] : '=';
    out += i + 2 < size ? abc[v & 63] : '=';
  }
  return out;
}

int64_t utf8_length(const std::string& s) {
  int64_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return -1;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return -1;
    i += len;
  }
  return n;
}

}  // namespace iomm
