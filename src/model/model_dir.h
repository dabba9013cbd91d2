// A model directory's iomm.toml: the resolved [model], [generator], [conditioner] tables. The paths it names (the
// frozen MLLM, a VAE file) are stored relative to the directory, so a run directory can be moved or copied to
// another machine together with its MLLM; absolute paths from older directories still load.
#pragma once
#include <string>

namespace iomm {

class Config;

// A model directory given either as itself or as the training run that holds it (RUN -> RUN/model).
std::string resolve_model_dir(const std::string& path);

// Reads DIR/iomm.toml with model.mllm and model.autoencoder resolved against DIR (fails, naming the fix, when DIR
// is not a model directory).
Config load_model_toml(const std::string& dir);

// Writes DIR/iomm.toml atomically from `resolved_toml` (IommModelConfig::resolved_toml), with model.mllm and
// model.autoencoder rewritten relative to DIR.
void write_model_toml(const std::string& dir, const std::string& resolved_toml);

}  // namespace iomm
