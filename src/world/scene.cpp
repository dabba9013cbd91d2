#include "world/scene.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace iomm::world {

namespace {
constexpr const char* kShapeNames[] = {"circle", "square", "triangle", "cross"};
constexpr const char* kColorNames[] = {"red", "yellow", "green", "blue", "purple"};
// Saturated, hue-separated colours (hue ~0, 51, 127, 223, 279 degrees): the detector classifies by hue, which
// blur towards the grey background does not change.
constexpr std::array<uint8_t, 3> kRgb[] = {{220, 40, 40}, {230, 200, 30}, {40, 170, 60}, {40, 90, 220},
                                           {150, 60, 200}};

// Whether the point (px, py) lies inside the object's shape.
bool inside(const Object& o, double px, double py) {
  const double h = o.size / 2, cx = o.cx(), cy = o.cy();
  switch (o.shape) {
    case Shape::circle: return (px - cx) * (px - cx) + (py - cy) * (py - cy) <= h * h;
    case Shape::square: return px >= o.x && px <= o.x + o.size && py >= o.y && py <= o.y + o.size;
    case Shape::triangle:  // apex up, base at the bottom, width = height
      return py >= o.y && py <= o.y + o.size && std::abs(px - cx) <= (py - o.y) / 2;
    case Shape::cross:  // a plus sign: two bars a third of the size thick
      return px >= o.x && px <= o.x + o.size && py >= o.y && py <= o.y + o.size &&
             (std::abs(px - cx) <= o.size / 6 || std::abs(py - cy) <= o.size / 6);
  }
  return false;
}

std::array<uint8_t, 3> rgb_from_json(const nlohmann::json& j, const char* field) {
  if (!j.is_array() || j.size() != 3) fail("scene JSON: field '{}' must be [r, g, b]", field);
  return {j[0].get<uint8_t>(), j[1].get<uint8_t>(), j[2].get<uint8_t>()};
}
}  // namespace

const char* name(Shape s) { return kShapeNames[int(s)]; }
const char* name(Color c) { return kColorNames[int(c)]; }
std::array<uint8_t, 3> rgb(Color c) { return kRgb[int(c)]; }

bool is_shape(const std::string& s) {
  return std::any_of(kShapes.begin(), kShapes.end(), [&](Shape x) { return s == name(x); });
}
bool is_color(const std::string& s) {
  return std::any_of(kColors.begin(), kColors.end(), [&](Color x) { return s == name(x); });
}
Shape parse_shape(const std::string& s) {
  for (Shape x : kShapes)
    if (s == name(x)) return x;
  fail("unknown shape class '{}': the tiny world has circle, square, triangle, cross", s);
}
Color parse_color(const std::string& s) {
  for (Color x : kColors)
    if (s == name(x)) return x;
  fail("unknown colour '{}': the tiny world has red, yellow, green, blue, purple", s);
}

nlohmann::json to_json(const Scene& s) {
  nlohmann::json objs = nlohmann::json::array();
  for (const auto& o : s.objects)
    objs.push_back({{"class", name(o.shape)},
                    {"color", name(o.color)},
                    {"bbox", {o.x, o.y, o.x + o.size, o.y + o.size}},
                    {"fill", o.fill}});
  return {{"size", s.size}, {"background", s.background}, {"objects", objs}};
}

Scene scene_from_json(const nlohmann::json& j) {
  Scene s;
  s.size = j.at("size").get<int>();
  s.background = rgb_from_json(j.at("background"), "background");
  for (const auto& o : j.at("objects")) {
    Object ob;
    ob.shape = parse_shape(o.at("class").get<std::string>());
    ob.color = parse_color(o.at("color").get<std::string>());
    const auto& b = o.at("bbox");
    ob.x = b.at(0).get<double>();
    ob.y = b.at(1).get<double>();
    ob.size = b.at(2).get<double>() - ob.x;
    ob.fill = o.contains("fill") ? rgb_from_json(o["fill"], "fill") : rgb(ob.color);
    s.objects.push_back(ob);
  }
  return s;
}

Raster render(const Scene& s) {
  Raster r(s.size, s.size);
  for (int y = 0; y < s.size; ++y)
    for (int x = 0; x < s.size; ++x) std::copy(s.background.begin(), s.background.end(), r.at(x, y));
  constexpr int kSub = 4;  // 4x4 samples per pixel: anti-aliased edges with exact k/16 coverages
  for (const auto& o : s.objects) {
    const int x0 = std::max(0, int(std::floor(o.x))), x1 = std::min(s.size - 1, int(std::floor(o.x + o.size)));
    const int y0 = std::max(0, int(std::floor(o.y))), y1 = std::min(s.size - 1, int(std::floor(o.y + o.size)));
    for (int py = y0; py <= y1; ++py)
      for (int px = x0; px <= x1; ++px) {
        int hits = 0;
        for (int sy = 0; sy < kSub; ++sy)
          for (int sx = 0; sx < kSub; ++sx)
            hits += inside(o, px + (sx + 0.5) / kSub, py + (sy + 0.5) / kSub);
        if (!hits) continue;
        const double cov = hits / double(kSub * kSub);
        uint8_t* p = r.at(px, py);
        for (int c = 0; c < 3; ++c) p[c] = uint8_t(std::floor(p[c] + (o.fill[c] - p[c]) * cov + 0.5));
      }
  }
  return r;
}

}  // namespace iomm::world
