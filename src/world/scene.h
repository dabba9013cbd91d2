// Scenes of the tiny world: coloured shapes on a neutral grey background, and their renderer.
// A scene is plain data (JSON round-trips it); rendering is deterministic (4x4 supersampling, IEEE double
// arithmetic only, no libm), so the same scene always gives the same bytes.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iomm::world {

// Shape classes and palette colours, in a fixed order (indices appear in no file: names do).
enum class Shape { circle, square, triangle, cross };
inline constexpr std::array<Shape, 4> kShapes = {Shape::circle, Shape::square, Shape::triangle, Shape::cross};
enum class Color { red, yellow, green, blue, purple };
inline constexpr std::array<Color, 5> kColors = {Color::red, Color::yellow, Color::green, Color::blue,
                                                 Color::purple};

const char* name(Shape s);
const char* name(Color c);
Shape parse_shape(const std::string& s);  // fails naming the valid classes
Color parse_color(const std::string& s);
bool is_shape(const std::string& s);
bool is_color(const std::string& s);
// Nominal sRGB of a palette colour (renders jitter around it).
std::array<uint8_t, 3> rgb(Color c);

// An 8-bit RGB raster, HWC interleaved (the tiny world's own; data/image.h converts to and from files).
struct Raster {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // width*height*3
  Raster() = default;
  Raster(int w, int h) : width(w), height(h), pixels(size_t(w) * h * 3, 0) {}
  uint8_t* at(int x, int y) { return &pixels[(size_t(y) * width + x) * 3]; }
  const uint8_t* at(int x, int y) const { return &pixels[(size_t(y) * width + x) * 3]; }
};

// One object: its class, colour, an axis-aligned s x s box (top-left x, y; pixel units, continuous) and the
// exact fill colour used (palette colour plus a small jitter).
struct Object {
  Shape shape = Shape::circle;
  Color color = Color::red;
  double x = 0, y = 0, size = 0;
  std::array<uint8_t, 3> fill{};
  double cx() const { return x + size / 2; }
  double cy() const { return y + size / 2; }
};

struct Scene {
  int size = 32;                       // image is size x size
  std::array<uint8_t, 3> background{};  // neutral grey
  std::vector<Object> objects;
};

nlohmann::json to_json(const Scene& s);
Scene scene_from_json(const nlohmann::json& j);
Raster render(const Scene& s);

}  // namespace iomm::world
