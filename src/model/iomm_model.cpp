#include "model/iomm_model.h"

#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/hf_config.h"
#include "models/weights.h"

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
  c.prediction = cfg.get_choice("model.prediction", c.prediction, {"velocity", "data"});
  c.prediction_t_min = cfg.get_double("model.prediction_t_min", c.prediction_t_min, 1e-4, 1.0);
  auto mllm = InternVLConfig::from_json(read_model_config(c.mllm), c.mllm + "/config.json");
  int64_t width = mllm.llm.hidden_size;
  c.generator = MMDiTConfig::from_config(cfg, "generator", /*default_context_in_dim=*/width);
  if (c.generator.context_in_dim != width)
    fail("{}: generator.context_in_dim = {} but the MLLM at {} has width {}; the generator reads the MLLM's "
         "hidden states, so remove the key or set it to {}",
         cfg.source(), c.generator.context_in_dim, c.mllm, width, width);
  c.conditioner = ConditionerConfig::from_config(cfg, "conditioner", width);
  return c;
}

namespace {

// TOML of the model config: what `load` needs to rebuild the model.
std::string model_toml(const IommModelConfig& c) {
  auto q = [](const std::string& s) { return nlohmann::json(s).dump(); };  // JSON strings are TOML basic strings
  const auto& g = c.generator;
  const auto& k = c.conditioner;
  std::string axes;
  for (size_t i = 0; i < g.axes_dim.size(); ++i) axes += (i ? ", " : "") + std::to_string(g.axes_dim[i]);
  return fmt::format(
      "[model]\nmllm = {}\nautoencoder = {}\nresolution = {}\ndevice = {}\ndtype = {}\nprediction = {}\n"
      "prediction_t_min = {}\n\n"
      "[generator]\nhidden_size = {}\nnum_heads = {}\ndepth = {}\ndepth_single_blocks = {}\ncontext_in_dim = {}\n"
      "vec_in_dim = {}\nmlp_ratio = {}\naxes_dim = [{}]\ntheta = {}\nqkv_bias = {}\nguidance_embed = {}\n"
      "patch_size = {}\nin_channels = {}\nout_channels = {}\n\n"
      "[conditioner]\nmode = {}\ncond_tokens = {}\nnum_queries = {}\nnum_heads = {}\nmlp_ratio = {}\n"
      "mask_ratio = {}\nmask_granularity = {}\naux_prompt = {}\nt2i_prefix = {}\nuncond_prompt = {}\n"
      "max_text_tokens = {}\n",
      q(c.mllm), q(c.autoencoder), c.resolution, q(c.device), q(c.dtype), q(c.prediction), c.prediction_t_min,
      g.hidden_size, g.num_heads, g.depth,
      g.depth_single, g.context_in_dim, g.vec_in_dim, g.mlp_ratio, axes, g.theta, g.qkv_bias, g.guidance_embed,
      g.patch_size, g.in_channels, g.out_channels, q(k.mode), q(k.cond_tokens), k.rqa.num_queries, k.rqa.num_heads,
      k.rqa.mlp_ratio, k.mask_ratio, q(k.mask_granularity == MaskGranularity::token ? "token" : "element"),
      q(k.templates.aux_prompt), q(k.templates.t2i_prefix), q(k.templates.uncond_prompt), k.templates.max_text_tokens);
}

void check_latent_channels(const IommModelConfig& c, const Autoencoder& ae) {
  if (c.generator.latent_channels() != ae.latent_channels())
    fail("generator.latent_channels = {} but the autoencoder '{}' has {} latent channels; set "
         "generator.latent_channels = {}",
         c.generator.latent_channels(), c.autoencoder, ae.latent_channels(), ae.latent_channels());
  int64_t f = ae.downsample_factor() * c.generator.patch_size;
  if (c.resolution % f != 0)
    fail("model.resolution = {} is not a multiple of {} (autoencoder factor {} × patch {})", c.resolution, f,
         ae.downsample_factor(), c.generator.patch_size);
}

}  // namespace

IommModel IommModel::create(const IommModelConfig& config, uint64_t seed) {
  IommModel m;
  m.config = config;
  auto mllm = load_internvl(config.mllm, config.device, config.dtype, /*lm_head=*/false);
  auto tok = Tokenizer::load(config.mllm);
  torch::manual_seed(seed);  // the adapter's initialisation
  m.conditioner = IommConditioner(config.conditioner, mllm, tok);
  m.conditioner->to(torch::Device(config.device), dtype_from_name(config.dtype));
  m.generator = MMDiT(config.generator,
                      torch::TensorOptions().device(torch::Device(config.device)).dtype(dtype_from_name(config.dtype)));
  m.generator->init_weights(seed);
  m.autoencoder = open_autoencoder(config.autoencoder, config.device, config.dtype);
  check_latent_channels(config, *m.autoencoder);
  return m;
}

IommModel IommModel::load(const std::string& dir, const std::string& device, const std::string& dtype) {
  auto path = dir + "/iomm.toml";
  if (!fs::exists(path))
    fail("{} has no iomm.toml: not an iomm model directory (training writes one to RUN/model; pass that, or a "
         "checkpoint's model directory)",
         dir);
  auto cfg = Config::load(path);
  if (!device.empty()) cfg.set("model.device=\"" + device + "\"");
  if (!dtype.empty()) cfg.set("model.dtype=\"" + dtype + "\"");
  auto c = IommModelConfig::from_config(cfg);
  cfg.check_unused();
  auto m = create(c, 0);
  m.load_weights_from(dir);
  freeze(*m.generator);
  if (m.conditioner->rqa) freeze(*m.conditioner->rqa);
  m.generator->eval();
  return m;
}

void IommModel::load_weights_from(const std::string& dir) {
  auto gen = load_tensors(dir + "/generator/model.safetensors");
  load_weights(*generator, gen, dir + "/generator/model.safetensors");
  if (conditioner->rqa) {
    if (!fs::exists(dir + "/rqa.safetensors"))
      fail("{} has no rqa.safetensors (a raw-mode model?) but this model's conditioner.mode is {}", dir,
           config.conditioner.mode);
    auto rqa = load_tensors(dir + "/rqa.safetensors");
    load_weights(*conditioner->rqa, rqa, dir + "/rqa.safetensors");
  }
}

void IommModel::save(const std::string& dir) const {
  fs::create_directories(dir);
  IommModelConfig c = config;
  c.mllm = fs::absolute(c.mllm).lexically_normal().string();  // the model dir may be read from anywhere
  save_mmdit(generator, dir + "/generator", "bfl");
  if (conditioner->rqa) save_tensors(dir + "/rqa.safetensors", module_state(*conditioner->rqa));
  write_file_atomic(dir + "/iomm.toml", model_toml(c));  // last: a directory with iomm.toml is complete
}

NamedTensors IommModel::trainable() const {
  auto out = trainable_parameters(*generator, "generator.");
  if (conditioner->rqa)
    for (auto& p : trainable_parameters(*conditioner->rqa, "conditioner.rqa.")) out.push_back(p);
  return out;
}

int64_t IommModel::latent_side() const { return config.resolution / autoencoder->downsample_factor(); }

int64_t IommModel::image_seq_len() const {
  int64_t s = latent_side() / config.generator.patch_size;
  return s * s;
}

at::Tensor IommModel::velocity(const at::Tensor& x_tokens, const at::Tensor& t, const Condition& cond) {
  int64_t side = latent_side();
  MMDiTInput in;
  in.img = x_tokens;
  in.img_ids = image_position_ids(side, side, config.generator.patch_size).to(x_tokens.device());
  in.txt = cond.h.to(x_tokens.scalar_type());
  in.txt_ids = torch::zeros({cond.h.size(1), 3}, torch::TensorOptions().device(x_tokens.device()));
  in.timesteps = t.to(x_tokens.device(), x_tokens.scalar_type());
  in.txt_mask = cond.mask;
  auto out = generator->forward(in);
  if (config.prediction == "velocity") return out;
  // x-prediction: v = (x_t − x̂) / t, since x_t = (1 − t)x + t·z.
  auto tt = in.timesteps.clamp_min(config.prediction_t_min).view({-1, 1, 1});
  return (x_tokens - out) / tt;
}

FlowLoss IommModel::loss(const at::Tensor& images, const Condition& cond, const TimestepSampling& timesteps,
                         at::Generator& gen, const at::Tensor& t_in, const at::Tensor& noise_in) {
  auto p = generator->parameters().front();
  at::Tensor x;
  {
    torch::NoGradGuard no_grad;  // the autoencoder is frozen
    x = pack_latents(autoencoder->encode(images.to(p.device(), p.scalar_type())), config.generator.patch_size);
  }
  int64_t B = x.size(0);
  // Draw on the CPU generator, then move: identical draws on every device.
  auto t = t_in.defined() ? t_in : sample_timesteps(timesteps, B, x.size(1), gen);
  auto z = noise_in.defined() ? noise_in : at::randn(x.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat));
  auto fp = flow_interpolate(x, z.to(x.device(), x.scalar_type()), t.to(x.device()));
  auto v = velocity(fp.x_t, t.to(x.device()), cond);
  auto per = (v.to(torch::kFloat) - fp.target.to(torch::kFloat)).pow(2).mean({1, 2});
  return {per.mean(), per.detach()};
}

Condition concat_conditions(const Condition& a, const Condition& b) {
  int64_t L = std::max(a.h.size(1), b.h.size(1));
  auto pad = [L](const Condition& c) {
    int64_t extra = L - c.h.size(1);
    if (extra == 0) return c;
    return Condition{torch::constant_pad_nd(c.h, {0, 0, 0, extra}),
                     torch::constant_pad_nd(c.mask.to(torch::kBool), {0, extra}, 0).to(torch::kBool)};
  };
  auto pa = pad(a), pb = pad(b);
  return {torch::cat({pa.h, pb.h}, 0), torch::cat({pa.mask.to(torch::kBool), pb.mask.to(torch::kBool)}, 0)};
}

at::Tensor IommModel::generate(const std::vector<ConditionInput>& conds, const GenerateOptions& o) {
  torch::NoGradGuard no_grad;
  generator->eval();
  auto p = generator->parameters().front();
  int64_t B = int64_t(conds.size());
  Condition cond = conditioner->forward(conds, /*mim=*/false, nullptr);
  bool guided = o.cfg_scale != 1.0;
  if (guided) {
    std::vector<ConditionInput> un(conds.size(), ConditionInput{ConditionKind::uncond, "", {}});
    cond = concat_conditions(cond, conditioner->forward(un, false, nullptr));
  }
  int64_t side = latent_side(), C = autoencoder->latent_channels();
  if (!o.seeds.empty() && int64_t(o.seeds.size()) != B)
    fail("generate: {} seeds for {} conditions", o.seeds.size(), B);
  std::vector<at::Tensor> noises;
  for (int64_t i = 0; i < B; ++i) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seeds.empty() ? o.seed + uint64_t(i) : o.seeds[size_t(i)]);
    noises.push_back(at::randn({C, side, side}, gen, torch::TensorOptions().dtype(torch::kFloat)));
  }
  auto noise = torch::stack(noises);
  auto x = pack_latents(noise, config.generator.patch_size).to(p.device(), p.scalar_type());
  VelocityFn fn = [&](const at::Tensor& xt, double sigma) {
    auto t = torch::full({xt.size(0)}, sigma, xt.options());
    return velocity(xt, t, cond);
  };
  if (guided) fn = classifier_free_guidance(fn, o.cfg_scale);
  auto sched = static_shift_schedule(o.steps, o.shift);
  auto out = sample_flow(o.sampler, fn, x, sched.sigmas);
  auto lat = unpack_latents(out, side, side, config.generator.patch_size);
  return autoencoder->decode(lat).to(torch::kFloat).clamp(-1, 1);
}

}  // namespace iomm
