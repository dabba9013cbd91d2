#include "world/detect.h"

#include <algorithm>
#include <cmath>

namespace iomm::world {

namespace {

// Prototype features per class, as a + b / s for an object of side s px (small objects drift: anti-aliasing,
// the denoise filter and blur round them off). Fitted to ground-truth renders, averaged over sharp and
// blurred (sigma 0.7) images at s = 8 and s = 24 (see docs/shapes-eval.md). The scales say how far a
// feature may drift before a class is doubted.
struct Linear {
  double a, b;
  double at(double s) const { return a + b / s; }
};
struct Prototype {
  Shape shape;
  Linear fill, top, bottom;
};
constexpr Prototype kPrototypes[] = {
    {Shape::circle, {0.773, 0.366}, {0.545, 0.144}, {0.545, 0.144}},
    {Shape::square, {1.003, -0.114}, {0.992, -1.758}, {0.992, -1.758}},
    {Shape::triangle, {0.484, 2.094}, {-0.075, 2.346}, {0.817, -0.642}},
    {Shape::cross, {0.503, 1.098}, {-0.028, 2.424}, {-0.028, 2.424}},
};
constexpr double kFillScale = 0.08, kCornerScale = 0.12, kAspectScale = 0.2;

double hue_deg(double r, double g, double b) {
  const double mx = std::max({r, g, b}), mn = std::min({r, g, b}), c = mx - mn;
  if (c <= 0) return 0;
  double h;
  if (mx == r) h = (g - b) / c;
  else if (mx == g) h = 2 + (b - r) / c;
  else h = 4 + (r - g) / c;
  h *= 60;
  return h < 0 ? h + 360 : h;
}

// Fraction of the rectangle [ax0, ax1) x [ay0, ay1) covered by pixel (px, py).
double overlap(int px, int py, double ax0, double ay0, double ax1, double ay1) {
  const double w = std::min<double>(px + 1, ax1) - std::max<double>(px, ax0);
  const double h = std::min<double>(py + 1, ay1) - std::max<double>(py, ay0);
  return w > 0 && h > 0 ? w * h : 0;
}

}  // namespace

SceneReading read_scene(const Raster& img, const DetectorParams& p) {
  const int W = img.width, H = img.height;
  const size_t N = size_t(W) * H;
  // 1. denoise (edge-clamped 3x3 binomial) into 0..1 floats
  std::vector<float> rgbf(N * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) {
        if (!p.denoise) {
          rgbf[(size_t(y) * W + x) * 3 + c] = img.at(x, y)[c] / 255.0f;
          continue;
        }
        float acc = 0;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int xx = std::clamp(x + dx, 0, W - 1), yy = std::clamp(y + dy, 0, H - 1);
            acc += float((dx ? 1 : 2) * (dy ? 1 : 2)) * img.at(xx, yy)[c];
          }
        rgbf[(size_t(y) * W + x) * 3 + c] = acc / (16 * 255.0f);
      }
  // 2-3. chroma and colour label per pixel
  std::array<double, kColors.size()> palette_hue{};
  for (Color c : kColors) {
    const auto v = rgb(c);
    palette_hue[int(c)] = hue_deg(v[0], v[1], v[2]);
  }
  std::vector<float> chroma(N);
  std::vector<int> label(N, -1);
  size_t foreground = 0;
  std::vector<float> neutral_lum;  // luminance of the background candidates, for step 6
  for (size_t i = 0; i < N; ++i) {
    const float r = rgbf[i * 3], g = rgbf[i * 3 + 1], b = rgbf[i * 3 + 2];
    chroma[i] = std::max({r, g, b}) - std::min({r, g, b});
    if (chroma[i] < p.fg_chroma) {
      neutral_lum.push_back((r + g + b) / 3);
      continue;
    }
    ++foreground;
    const double h = hue_deg(r, g, b);
    double best = 1e9;
    for (size_t c = 0; c < palette_hue.size(); ++c) {
      double d = std::abs(h - palette_hue[c]);
      d = std::min(d, 360 - d);
      if (d < best && d <= p.max_hue_distance) best = d, label[i] = int(c);
    }
  }
  // 4. 8-connected components of equal label
  const double min_area = std::max(p.min_area_px, double(N) / p.min_area_divisor);
  std::vector<int> comp(N, -1);
  std::vector<Detection> out;
  size_t explained = 0;  // foreground pixels inside accepted detections
  std::vector<int> stack, members;
  for (size_t seed = 0; seed < N; ++seed) {
    if (label[seed] < 0 || comp[seed] >= 0) continue;
    members.clear();
    stack.assign(1, int(seed));
    comp[seed] = int(seed);
    while (!stack.empty()) {
      const int i = stack.back();
      stack.pop_back();
      members.push_back(i);
      const int x = i % W, y = i / W;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const int xx = x + dx, yy = y + dy;
          if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
          const int j = yy * W + xx;
          if (comp[j] < 0 && label[j] == label[seed]) comp[j] = int(seed), stack.push_back(j);
        }
    }
    // 5. geometry on soft coverage
    float cmax = 0;
    int x0 = W, x1 = -1, y0 = H, y1 = -1;
    for (int i : members) {
      cmax = std::max(cmax, chroma[i]);
      x0 = std::min(x0, i % W), x1 = std::max(x1, i % W), y0 = std::min(y0, i / W), y1 = std::max(y1, i / W);
    }
    std::vector<double> colmax(x1 - x0 + 1, 0.0), rowmax(y1 - y0 + 1, 0.0);
    std::vector<double> cover((x1 - x0 + 1) * size_t(y1 - y0 + 1), 0.0);
    double area = 0;
    for (int i : members) {
      const double w = std::min(1.0, double(chroma[i]) / cmax);
      const int x = i % W, y = i / W;
      area += w;
      colmax[x - x0] = std::max(colmax[x - x0], w);
      rowmax[y - y0] = std::max(rowmax[y - y0], w);
      cover[size_t(y - y0) * (x1 - x0 + 1) + (x - x0)] = w;
    }
    if (area < min_area) continue;
    double width = 0, height = 0, mx = 0, my = 0;
    for (size_t k = 0; k < colmax.size(); ++k) width += colmax[k], mx += colmax[k] * (x0 + k + 0.5);
    for (size_t k = 0; k < rowmax.size(); ++k) height += rowmax[k], my += rowmax[k] * (y0 + k + 0.5);
    mx /= width, my /= height;
    Detection d;
    d.color = Color(label[seed]);
    d.area = area;
    d.bbox = {mx - width / 2, my - height / 2, mx + width / 2, my + height / 2};
    d.fill = area / (width * height);
    d.log_aspect = std::log(width / height);
    // mean coverage of the corner cells of a 3x3 grid over the bbox
    auto cell = [&](int gx, int gy) {
      const double cx0 = d.bbox[0] + gx * width / 3, cy0 = d.bbox[1] + gy * height / 3;
      const double cx1 = cx0 + width / 3, cy1 = cy0 + height / 3;
      double acc = 0;
      for (int y = std::max(y0, int(std::floor(cy0))); y <= std::min(y1, int(std::floor(cy1))); ++y)
        for (int x = std::max(x0, int(std::floor(cx0))); x <= std::min(x1, int(std::floor(cx1))); ++x)
          acc += cover[size_t(y - y0) * (x1 - x0 + 1) + (x - x0)] * overlap(x, y, cx0, cy0, cx1, cy1);
      return acc / ((width / 3) * (height / 3));
    };
    d.top = (cell(0, 0) + cell(2, 0)) / 2;
    d.bottom = (cell(0, 2) + cell(2, 2)) / 2;
    double best = 1e9;
    const double side = std::sqrt(width * height);
    for (const auto& pr : kPrototypes) {
      const double a = (d.fill - pr.fill.at(side)) / kFillScale, t = (d.top - pr.top.at(side)) / kCornerScale,
                   b = (d.bottom - pr.bottom.at(side)) / kCornerScale, s = d.log_aspect / kAspectScale;
      const double dist2 = a * a + t * t + b * b + s * s;
      if (dist2 < best) best = dist2, d.shape = pr.shape;
    }
    d.confidence = std::exp(-best / 2);
    if (d.confidence >= p.min_confidence) out.push_back(d), explained += members.size();
  }
  // 6. readability
  size_t off_background = 0;
  if (!neutral_lum.empty()) {
    auto mid = neutral_lum.begin() + ptrdiff_t(neutral_lum.size() / 2);
    std::nth_element(neutral_lum.begin(), mid, neutral_lum.end());
    const float level = *mid;
    for (float l : neutral_lum) off_background += std::abs(l - level) > p.background_tolerance;
  }
  std::stable_sort(out.begin(), out.end(), [](const Detection& a, const Detection& b) {
    return a.confidence != b.confidence ? a.confidence > b.confidence : a.area > b.area;
  });
  SceneReading r;
  r.stray = double(foreground - explained + off_background) / double(N);
  r.readable = r.stray <= p.max_stray;
  if (r.readable) r.objects = std::move(out);
  return r;
}

std::vector<Detection> detect(const Raster& img, const DetectorParams& p) { return read_scene(img, p).objects; }

nlohmann::ordered_json to_json(const Detection& d) {
  auto r3 = [](double v) { return std::round(v * 1000) / 1000; };
  return nlohmann::ordered_json{{"class", name(d.shape)}, {"color", name(d.color)},  {"confidence", r3(d.confidence)},
          {"bbox", {r3(d.bbox[0]), r3(d.bbox[1]), r3(d.bbox[2]), r3(d.bbox[3])}},
          {"area", r3(d.area)},     {"fill", r3(d.fill)},      {"top", r3(d.top)},
          {"bottom", r3(d.bottom)}, {"log_aspect", r3(d.log_aspect)}};
}

}  // namespace iomm::world
