// `iomm image convert IN OUT.png` (or `IN... --out-dir DIR`): decode any supported image (EXIF orientation
// applied), optionally resize or shorter-side-resize + centre-crop, and write PNGs. A user tool, and the hook
// for the conformance tests (the batch form saves the binary's start-up per image).
#include <filesystem>
#include <memory>
#include <regex>
#include <set>

#include "cli/command.h"
#include "core/error.h"
#include "core/log.h"
#include "data/image.h"

namespace {

struct ConvertArgs {
  std::vector<std::string> paths;
  std::string out_dir, resize, filter = "bicubic", mode = "keep";
  int center_crop = 0;
  bool jpeg_draft = false;  // with --center-crop: decode a large JPEG at reduced scale first (data.jpeg_draft)
};

// "640x480" -> {640, 480}.
std::pair<int, int> parse_size(const std::string& s) {
  static const std::regex re(R"((\d{1,6})[xX](\d{1,6}))");
  std::smatch m;
  if (!std::regex_match(s, m, re))
    iomm::fail("--resize '{}': expected WIDTHxHEIGHT with positive integers, e.g. 224x224", s);
  int w = std::stoi(m[1].str()), h = std::stoi(m[2].str());
  if (w <= 0 || h <= 0) iomm::fail("--resize '{}': width and height must be positive", s);
  return {w, h};
}

void convert_one(const ConvertArgs& a, const std::string& in, const std::string& out) {
  using namespace iomm;
  Resample filter = parse_resample(a.filter);
  Image img = a.jpeg_draft ? decode_image(in, a.center_crop) : decode_image(in);
  if (a.mode == "rgb") img = to_rgb(img);
  else if (a.mode == "rgba") img = to_rgba(img);
  else if (a.mode == "gray") img = to_gray(img);
  if (!a.resize.empty()) {
    auto [w, h] = parse_size(a.resize);
    img = resize(img, w, h, filter);
  } else if (a.center_crop > 0) {
    img = resize_shorter_side_center_crop(img, a.center_crop, filter);
  }
  write_png(img, out);
  spdlog::info("{} -> {} ({}x{}, {} channel{})", in, out, img.width, img.height, img.channels,
               img.channels == 1 ? "" : "s");
}

int run_convert(const ConvertArgs& a) {
  using namespace iomm;
  namespace fs = std::filesystem;
  if (a.jpeg_draft && a.center_crop <= 0) fail("--jpeg-draft needs --center-crop N (it decodes for that size)");
  if (!a.resize.empty() && a.center_crop > 0)
    fail("--resize and --center-crop are exclusive: --center-crop N already resizes the shorter side to N");
  if (a.out_dir.empty()) {
    if (a.paths.size() != 2)
      fail("image convert: give IN OUT.png, or several inputs with --out-dir DIR (got {} paths)", a.paths.size());
    convert_one(a, a.paths[0], a.paths[1]);
    return 0;
  }
  std::vector<std::string> outs;
  std::set<std::string> seen;
  for (const std::string& in : a.paths) {
    outs.push_back((fs::path(a.out_dir) / fs::path(in).stem()).string() + ".png");
    if (!seen.insert(outs.back()).second)
      fail("{}: another input also maps to {}; rename one of them or convert them separately", in, outs.back());
  }
  fs::create_directories(a.out_dir);
  for (size_t i = 0; i < a.paths.size(); ++i) convert_one(a, a.paths[i], outs[i]);
  return 0;
}

iomm::cli::Register reg{{"image", "Image utilities (decode, resize, centre-crop) with Pillow-exact numerics",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto args = std::make_shared<ConvertArgs>();
    CLI::App* conv = app.add_subcommand(
        "convert", "Decode IN (JPEG/PNG/WebP, EXIF orientation applied) and write OUT as PNG; with --out-dir, "
                   "every positional is an input and DIR/<stem>.png the output");
    conv->add_option("paths", args->paths, "IN OUT.png, or IN... with --out-dir")->required();
    conv->add_option("--out-dir", args->out_dir, "write DIR/<input stem>.png for every input");
    conv->add_option("--resize", args->resize, "resize to WIDTHxHEIGHT (Pillow Image.resize)");
    conv->add_option("--center-crop", args->center_crop,
                     "resize the shorter side to N, then centre-crop NxN (torchvision Resize + CenterCrop)")
        ->check(CLI::PositiveNumber);
    conv->add_flag("--jpeg-draft", args->jpeg_draft,
                   "with --center-crop N: decode JPEGs at 1/2, 1/4 or 1/8 scale first while the shorter side stays "
                   ">= N (Pillow's Image.draft; the training loader's data.jpeg_draft)");
    conv->add_option("--filter", args->filter, "resampling filter")
        ->check(CLI::IsMember({"nearest", "bilinear", "bicubic"}))
        ->capture_default_str();
    conv->add_option("--mode", args->mode, "output channels: keep the decoded ones, or convert (before resizing)")
        ->check(CLI::IsMember({"keep", "rgb", "rgba", "gray"}))
        ->capture_default_str();
    return std::function<int()>([args] { return run_convert(*args); });
  }}};

}  // namespace
