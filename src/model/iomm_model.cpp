#include "model/iomm_model.h"

#include <filesystem>

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_io.h"
#include "model/model_dir.h"
#include "models/hf_config.h"

namespace iomm {

namespace fs = std::filesystem;

IommModelConfig IommModelConfig::from_config(Config& cfg) {
  IommModelConfig c;
  c.mllm = cfg.get_string("model.mllm", "");
  if (c.mllm.empty())
    fail("{}: model.mllm is not set; point it at an InternVL checkpoint directory (config.json, *.safetensors, "
         "tokenizer.json), e.g. the tiny world's understanding run: --set model.mllm=RUN/model",
         cfg.source());
  c.autoencoder = cfg.get_string("model.autoencoder", c.autoencoder);
  c.resolution = cfg.get_int("model.resolution", c.resolution, 8, 8192);
  c.device = cfg.get_string("model.device", c.device);
  c.dtype = cfg.get_choice("model.dtype", c.dtype, {"float32", "bfloat16", "float16"});
  c.frozen_dtype = cfg.get_choice("model.frozen_dtype", c.dtype, {"float32", "bfloat16", "float16"});
  c.prediction = cfg.get_choice("model.prediction", c.prediction, {"velocity", "data"});
  c.prediction_t_min = cfg.get_double("model.prediction_t_min", c.prediction_t_min, 1e-4, 1.0);
  auto mllm = InternVLConfig::from_json(read_model_config(c.mllm), c.mllm + "/config.json");
  int64_t width = mllm.llm.hidden_size;
  c.generator = GeneratorConfig::from_config(cfg, "generator", width);
  c.conditioner = ConditionerConfig::from_config(cfg, "conditioner", width);
  c.resolved_toml = cfg.dump_resolved({"model", "generator", "conditioner"});
  return c;
}

namespace {

void check_latent_channels(const IommModelConfig& c, const Autoencoder& ae) {
  if (c.generator.latent_channels() != ae.latent_channels())
    fail("generator.latent_channels = {} but the autoencoder '{}' has {} latent channels; set "
         "generator.latent_channels = {}",
         c.generator.latent_channels(), c.autoencoder, ae.latent_channels(), ae.latent_channels());
  int64_t f = ae.downsample_factor() * c.generator.patch_size();
  if (c.resolution % f != 0)
    fail("model.resolution = {} is not a multiple of {} (autoencoder factor {} × patch {})", c.resolution, f,
         ae.downsample_factor(), c.generator.patch_size());
}

void set_requires_grad(torch::nn::Module& m, bool on) {
  for (auto& p : m.parameters()) p.set_requires_grad(on);
}

}  // namespace

IommModel IommModel::create(const IommModelConfig& config, uint64_t seed) {
  IommModel m;
  m.config_ = config;
  auto mllm = load_internvl(config.mllm, config.device, config.frozen_dtype, /*lm_head=*/false);
  auto tok = Tokenizer::load(config.mllm);
  torch::manual_seed(seed);  // the adapter's initialisation
  m.conditioner_ = IommConditioner(config.conditioner, mllm, tok);
  m.conditioner_->to(torch::Device(config.device), dtype_from_name(config.dtype));  // the adapter (the MLLM is not
                                                                                   // a registered submodule)
  m.generator_ = make_generator(config.generator, config.device, config.dtype);
  m.generator_->init_weights(seed);
  m.autoencoder_ = open_autoencoder(config.autoencoder, config.device, config.frozen_dtype);
  check_latent_channels(config, *m.autoencoder_);
  return m;
}

IommModel IommModel::load(const std::string& dir, const std::string& device, const std::string& dtype) {
  auto cfg = load_model_toml(dir);
  if (!device.empty()) cfg.set("model.device=\"" + device + "\"");
  if (!dtype.empty()) cfg.set("model.dtype=\"" + dtype + "\"");
  if (!dtype.empty()) cfg.set("model.frozen_dtype=\"" + dtype + "\"");
  auto c = IommModelConfig::from_config(cfg);
  cfg.check_unused();
  auto m = create(c, 0);
  m.load_weights_from(dir);
  freeze(m.generator_->module());
  if (m.conditioner_->rqa) freeze(*m.conditioner_->rqa);
  m.generator_->module().eval();
  return m;
}

void IommModel::load_weights_from(const std::string& dir) {
  generator_->load_weights(dir + "/generator");
  if (conditioner_->rqa) {
    if (!fs::exists(dir + "/rqa.safetensors"))
      fail("{} has no rqa.safetensors (a raw-mode model?) but this model's conditioner.mode is {}", dir,
           config_.conditioner.mode);
    auto rqa = load_tensors(dir + "/rqa.safetensors");
    load_weights(*conditioner_->rqa, rqa, dir + "/rqa.safetensors");
  }
}

void IommModel::save(const std::string& dir) const {
  fs::create_directories(dir);
  generator_->save(dir + "/generator");
  if (conditioner_->rqa) save_tensors(dir + "/rqa.safetensors", module_state(*conditioner_->rqa));
  write_model_toml(dir, config_.resolved_toml);  // last: a directory with iomm.toml is complete
}

NamedTensors IommModel::trainable() const {
  auto out = trainable_parameters(generator_->module(), "generator.");
  if (conditioner_->rqa)
    for (auto& p : trainable_parameters(*conditioner_->rqa, "conditioner.rqa.")) out.push_back(p);
  return out;
}

void IommModel::unfreeze() {
  set_requires_grad(generator_->module(), true);
  if (conditioner_->rqa) set_requires_grad(*conditioner_->rqa, true);
}

void IommModel::set_training(bool on) { generator_->module().train(on); }

void IommModel::set_activation_checkpointing(int64_t every) { generator_->set_activation_checkpointing(every); }

int64_t IommModel::latent_side() const { return config_.resolution / autoencoder_->downsample_factor(); }

int64_t IommModel::image_seq_len() const {
  int64_t s = latent_side() / config_.generator.patch_size();
  return s * s;
}

int64_t IommModel::generator_parameters() const { return count_parameters(generator_->module()); }

int64_t IommModel::adapter_parameters() const {
  return conditioner_->rqa ? count_parameters(*conditioner_->rqa) : 0;
}

int64_t IommModel::truncated_captions() const { return conditioner_->truncated; }

}  // namespace iomm
