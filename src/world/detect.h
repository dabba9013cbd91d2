// ShapesEval's object detector: colour segmentation + shape geometry, no learned weights.
//
// Pipeline and thresholds (also in docs/shapes-eval.md; DetectorParams holds them):
//  1. Denoise: a 3x3 binomial filter ([1 2 1]^2 / 16) cuts per-pixel colour noise by ~2.7x (sigma 0.05 ->
//     0.019) at the cost of a blur of ~0.7 px, far below the object size (>= 8 px).
//  2. Foreground: chroma C = max(R,G,B) - min(R,G,B) on a 0..1 scale. Background is neutral grey (C ~ 0);
//     palette colours have C >= 0.5. A pixel is foreground when C >= fg_chroma (0.12): above the denoised
//     noise (a 6-sigma margin) and catching the blurred fringe down to ~25% coverage.
//  3. Colour: the HSV hue of a foreground pixel, classified to the nearest palette hue (red 0, yellow 51,
//     green 129, blue 223, purple 279 degrees) if within max_hue_distance (35 degrees), else unlabelled.
//     Hue is the robust cue: mixing a colour with grey (blur, anti-aliasing) leaves its hue unchanged.
//  4. Objects: 8-connected components of same-colour pixels with soft area >= max(6, size^2/200) px^2.
//  5. Geometry on the soft coverage w = C / C_max(component) (blur moves coverage, it conserves it):
//     area = sum w; width/height = sum of the column/row maxima of w (exact for an anti-aliased box edge);
//     bbox centred on the profiles' centres of mass. Features: fill = area / (width * height)
//     (square 1, circle pi/4, triangle and cross 1/2), the mean coverage of the two top and the two
//     bottom cells of a 3x3 grid over the bbox (square 1/1, circle .45/.45, triangle 0/.75, cross .12/.12),
//     and log aspect ratio (all classes 0). The class is the nearest prototype in units of the feature
//     scales; confidence = exp(-d^2 / 2); detections below min_confidence (0.05) are dropped (GenEval's
//     detector threshold plays this role).
//  6. Readability: a scene of the tiny world is a few solid shapes on a uniform grey background, so colour that
//     no detection explains and grey that is off the background's level are "stray". stray = (foreground pixels
//     outside accepted detections + neutral pixels whose luminance is more than background_tolerance from the
//     median neutral luminance) / all pixels. Above max_stray (0.1) the image is unreadable and yields no
//     objects: without this, colour noise (an untrained or collapsed generator) splits into hundreds of small
//     components, some of which pass the geometry test (measured: pure noise scored 0.75 on single_object).
#pragma once
#include <array>
#include <vector>

#include <nlohmann/json.hpp>

#include "world/scene.h"

namespace iomm::world {

struct DetectorParams {
  double fg_chroma = 0.12;
  double max_hue_distance = 35.0;  // degrees
  double min_area_px = 6.0;        // and at least size^2 / min_area_divisor
  double min_area_divisor = 200.0;
  double min_confidence = 0.05;
  double background_tolerance = 0.08;  // luminance (0..1) a neutral pixel may differ from the background level
  double max_stray = 0.1;              // fraction of stray pixels above which the image is unreadable
  bool denoise = true;
};

struct Detection {
  Shape shape = Shape::circle;
  Color color = Color::red;
  double confidence = 0;
  std::array<double, 4> bbox{};  // x0, y0, x1, y1 (sub-pixel)
  double area = 0;
  // The geometry features the class was chosen from (for debugging and the report).
  double fill = 0, top = 0, bottom = 0, log_aspect = 0;
};

struct SceneReading {
  std::vector<Detection> objects;  // sorted by confidence, highest first; empty when !readable
  double stray = 0;                // fraction of pixels neither background nor part of a detection (step 6)
  bool readable = true;            // stray <= max_stray
};
SceneReading read_scene(const Raster& img, const DetectorParams& p = {});
// The objects of read_scene (GenEval's order within a class: highest confidence first).
std::vector<Detection> detect(const Raster& img, const DetectorParams& p = {});
nlohmann::ordered_json to_json(const Detection& d);

}  // namespace iomm::world
