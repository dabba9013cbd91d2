// The stage-1 reconstruction proxy (`iomm eval recon`, and step 3b of `iomm demo`): how well an image-only
// pre-trained generator redraws a scene from that scene's own self-condition.
//
// Held-out prompts are rendered (the ground truth of world::render_prompts, in GenEval's layout); each render is
// given to the model as an image condition (the auxiliary prompt + its image tokens, unmasked, as at inference),
// and the reconstruction is written in the same layout with the source's metadata.jsonl. So ShapesEval judges each
// reconstruction against its own source scene's prompt: a reconstruction that is its input scores the evaluator's
// ceiling (1.0 on ground truth), one without the objects scores 0. PSNR against the input says how close it is
// in pixels. Both are cheap (one sampling pass, no text), so generator designs can be compared in minutes on
// stage 1 alone before full demos.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/iomm_model.h"
#include "world/prompts.h"
#include "world/shapes_eval.h"

namespace iomm {

struct ReconScore {
  world::EvalResult shapes;   // ShapesEval of the reconstructions, each against its source's metadata
  double mse = 0;             // mean squared error over all pixels, images in [0, 1]
  double psnr = 0;            // 10·log10(1 / mse) in dB; +inf when every reconstruction equals its input
  // Mean over images of the mean over palette colours (present in the input or the reconstruction) of the IoU of
  // that colour's pixels: colour and place, what the self-condition carries (a linear probe reads both from it),
  // without needing the shape the detector asks for. PSNR alone is dominated by the grey background: a generator
  // that never saw a condition reached 14.3 dB, a working one 13.6-14.7 (docs/tiny-world.md, fifth round).
  double color_iou = 0;
  int64_t images = 0;
  nlohmann::ordered_json to_json() const;  // psnr as null when infinite (JSON has no inf)
};

// Palette class of each pixel of an 8-bit RGB image [3, H, W] in [0, 1]: 1 + the nearest palette colour for
// saturated pixels near one, 0 for the grey background and everything else. [H, W] int64.
at::Tensor palette_classes(const at::Tensor& chw);
// The IoU of each palette colour's pixels in `a` and `b` (palette_classes), averaged over the colours present in
// either; 1 when neither has a coloured pixel.
double palette_iou(const at::Tensor& a, const at::Tensor& b);

// Scores the reconstructions in `recon_dir` against the inputs in `inputs_dir` (both GenEval's layout, the same
// prompts and file names). Fails naming the file when a reconstruction is missing or has another size.
ReconScore score_reconstructions(const std::string& inputs_dir, const std::string& recon_dir);

struct ReconEvalOptions {
  int per_prompt = 1;
  int64_t batch = 64;          // images per generate() call
  GenerateOptions generate;    // steps, CFG (against the unconditional prompt), seed of the noise
  uint64_t scene_seed = 0;     // seed of the rendered inputs (world::render_prompts)
  bool features = false;       // also write OUT/features.safetensors + OUT/scenes.jsonl (the linear probe's input)
  bool progress = true;
};

// Renders the inputs into OUT/inputs, reconstructs them into OUT/recon, scores them, writes OUT/recon.json.
ReconScore run_recon_eval(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::string& out,
                          const ReconEvalOptions& o);

}  // namespace iomm
