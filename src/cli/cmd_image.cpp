// `iomm image convert IN OUT.png`: decode any supported image (EXIF orientation applied), optionally resize or
// shorter-side-resize + centre-crop, and write a PNG. A user tool, and the hook for the conformance tests.
#include <memory>
#include <regex>

#include "cli/command.h"
#include "core/error.h"
#include "core/log.h"
#include "data/image.h"

namespace {

struct ConvertArgs {
  std::string in, out, resize, filter = "bicubic", mode = "keep";
  int center_crop = 0;
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

int run_convert(const ConvertArgs& a) {
  using namespace iomm;
  if (!a.resize.empty() && a.center_crop > 0)
    fail("--resize and --center-crop are exclusive: --center-crop N already resizes the shorter side to N");
  Resample filter = parse_resample(a.filter);
  Image img = decode_image(a.in);
  if (a.mode == "rgb") img = to_rgb(img);
  else if (a.mode == "rgba") img = to_rgba(img);
  else if (a.mode == "gray") img = to_gray(img);
  if (!a.resize.empty()) {
    auto [w, h] = parse_size(a.resize);
    img = resize(img, w, h, filter);
  } else if (a.center_crop > 0) {
    img = resize_shorter_side_center_crop(img, a.center_crop, filter);
  }
  write_png(img, a.out);
  spdlog::info("{} -> {} ({}x{}, {} channel{})", a.in, a.out, img.width, img.height, img.channels,
               img.channels == 1 ? "" : "s");
  return 0;
}

iomm::cli::Register reg{{"image", "Image utilities (decode, resize, centre-crop) with Pillow-exact numerics",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto args = std::make_shared<ConvertArgs>();
    CLI::App* conv = app.add_subcommand(
        "convert", "Decode IN (JPEG/PNG/WebP, EXIF orientation applied) and write OUT as PNG");
    conv->add_option("in", args->in, "input image")->required()->check(CLI::ExistingFile);
    conv->add_option("out", args->out, "output PNG path")->required();
    conv->add_option("--resize", args->resize, "resize to WIDTHxHEIGHT (Pillow Image.resize)");
    conv->add_option("--center-crop", args->center_crop,
                     "resize the shorter side to N, then centre-crop NxN (torchvision Resize + CenterCrop)")
        ->check(CLI::PositiveNumber);
    conv->add_option("--filter", args->filter, "resampling filter")
        ->check(CLI::IsMember({"nearest", "bilinear", "bicubic"}))
        ->capture_default_str();
    conv->add_option("--mode", args->mode, "output channels: keep the decoded ones, or convert (before resizing)")
        ->check(CLI::IsMember({"keep", "rgb", "rgba", "gray"}))
        ->capture_default_str();
    return std::function<int()>([args] { return run_convert(*args); });
  }}};

}  // namespace
