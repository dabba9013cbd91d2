// `iomm tokenize`: text -> token ids (or ids -> text) with a Qwen2-style byte-level BPE tokenizer. The --file
// mode handles many inputs in one process, for bulk comparison with Hugging Face `tokenizers`.
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/command.h"
#include "core/error.h"
#include "text/tokenizer.h"

namespace {

using json = nlohmann::json;

struct Options {
  std::string tokenizer, text, file;
  bool json_lines = false, decode = false, chat = false, skip_special = false;
};

std::vector<int32_t> parse_ids(const std::string& s, const std::string& where) {
  json j;
  try {
    j = json::parse(s);
  } catch (const json::exception& e) {
    iomm::fail("{}: not a JSON array of token ids ({}); write e.g. [9707, 1879]", where, e.what());
  }
  if (!j.is_array()) iomm::fail("{}: expected a JSON array of token ids such as [9707, 1879]", where);
  std::vector<int32_t> ids;
  for (const json& x : j) {
    if (!x.is_number_integer()) iomm::fail("{}: {} is not an integer token id", where, x.dump());
    ids.push_back(x.get<int32_t>());
  }
  return ids;
}

// One input of --file: the raw line, or with --json a JSON string (for texts that contain newlines).
std::string parse_text_line(const std::string& line, bool json_lines, const std::string& where) {
  if (!json_lines) return line;
  try {
    json j = json::parse(line);
    if (j.is_string()) return j.get<std::string>();
  } catch (const json::exception&) {
  }
  iomm::fail("{}: with --json every line must be one JSON string, e.g. \"a\\nb\"", where);
}

std::string prepare(const Options& o, const std::string& text) {
  return o.chat ? iomm::apply_chat_template({{"user", text}}, /*add_generation_prompt=*/true) : text;
}

int run(const Options& o, bool have_text, bool have_file) {
  if (have_text == have_file) iomm::fail("tokenize: give exactly one of --text and --file");
  auto t0 = std::chrono::steady_clock::now();
  iomm::Tokenizer tok = iomm::Tokenizer::load(o.tokenizer);
  auto t1 = std::chrono::steady_clock::now();
  spdlog::debug("tokenizer {} loaded in {:.0f} ms ({} ids)", o.tokenizer,
                std::chrono::duration<double, std::milli>(t1 - t0).count(), tok.vocab_size());

  if (have_text) {
    if (o.decode)
      std::cout << tok.decode(parse_ids(o.text, "--text"), o.skip_special) << "\n";
    else
      std::cout << json(tok.encode(prepare(o, o.text))).dump() << "\n";
    return 0;
  }
  std::ifstream file;
  if (o.file != "-") {
    file.open(o.file, std::ios::binary);
    if (!file) iomm::fail("{}: cannot open the file given to --file", o.file);
  }
  std::istream& in = o.file == "-" ? std::cin : file;
  std::string line, out;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files; use --json to keep a '\r'
    std::string where = fmt::format("{}:{}", o.file, n);
    if (o.decode)
      out = json(tok.decode(parse_ids(line, where), o.skip_special)).dump();
    else
      out = json(tok.encode(prepare(o, parse_text_line(line, o.json_lines, where)))).dump();
    std::cout << out << '\n';
  }
  std::cout.flush();
  auto t2 = std::chrono::steady_clock::now();
  spdlog::debug("{} lines in {:.1f} ms", n, std::chrono::duration<double, std::milli>(t2 - t1).count());
  return 0;
}

iomm::cli::Register reg{{"tokenize", "Encode text to token ids (or decode ids to text) with a Qwen2-style tokenizer",
  [](CLI::App& app) {
    auto o = std::make_shared<Options>();
    app.add_option("--tokenizer", o->tokenizer,
                   "tokenizer.json, or a model directory with tokenizer.json or vocab.json + merges.txt")
        ->required();
    CLI::Option* text = app.add_option("--text", o->text, "one text; prints its ids as a JSON array");
    CLI::Option* file = app.add_option("--file", o->file,
                                       "one input per line ('-' = stdin); prints one JSON result per line");
    text->excludes(file);
    app.add_flag("--json", o->json_lines, "each --file line is a JSON string (texts with newlines)");
    app.add_flag("--decode", o->decode,
                 "inputs are JSON arrays of ids; prints the text (--text) or JSON strings (--file)");
    app.add_flag("--skip-special-tokens", o->skip_special, "with --decode, drop special added tokens");
    app.add_flag("--chat", o->chat,
                 "wrap each text as <|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n");
    return [o, text, file] { return run(*o, text->count() > 0, file->count() > 0); };
  }}};

}  // namespace
