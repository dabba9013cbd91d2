#include "models/autoencoder.h"

#include <array>
#include <cmath>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/hf_config.h"
#include "models/name_conversion.h"
#include "models/weights.h"

namespace iomm {

namespace fs = std::filesystem;
namespace nn = torch::nn;

static std::string shape(const at::Tensor& t) { return c10::str(t.sizes()); }

// ---------------------------------------------------------------------------------------------------- identity

at::Tensor IdentityAutoencoder::encode(const at::Tensor& image) {
  if (image.dim() != 4 || image.size(1) != channels_)
    fail("identity autoencoder: expected images [B, {}, H, W], got {}", channels_, shape(image));
  return image;
}

at::Tensor IdentityAutoencoder::decode(const at::Tensor& latent) {
  if (latent.dim() != 4 || latent.size(1) != channels_)
    fail("identity autoencoder: expected latents [B, {}, H, W], got {}", channels_, shape(latent));
  return latent;
}

std::string IdentityAutoencoder::describe() const {
  return fmt::format("identity (pixel space, {} channels)", channels_);
}

std::string IdentityAutoencoder::fingerprint() const { return fmt::format("identity:{}", channels_); }

// ---------------------------------------------------------------------------------------------------- config

void AutoencoderConfig::validate(const std::string& source) const {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) fail("{}: {} must be positive (got {})", source, name, v);
  };
  positive("in_channels", in_channels);
  positive("out_channels", out_channels);
  positive("layers_per_block", layers_per_block);
  positive("latent_channels", latent_channels);
  positive("norm_num_groups", norm_num_groups);
  if (block_out_channels.empty()) fail("{}: block_out_channels must not be empty", source);
  for (auto c : block_out_channels)
    if (c <= 0 || c % norm_num_groups != 0)
      fail("{}: every block_out_channels entry must be a positive multiple of norm_num_groups {} (got {})", source,
           norm_num_groups, c);
  if (!(scaling_factor > 0) || !std::isfinite(scaling_factor))
    fail("{}: scaling_factor must be positive (got {})", source, scaling_factor);
  if (!std::isfinite(shift_factor)) fail("{}: shift_factor must be finite", source);
}

AutoencoderConfig AutoencoderConfig::from_json(const nlohmann::json& j, const std::string& source) {
  AutoencoderConfig c;
  if (!j.is_object()) fail("{}: expected a JSON object", source);
  auto get_int = [&](const char* k, int64_t& dst) {
    if (!j.contains(k)) return;
    if (!j[k].is_number_integer()) fail("{}: '{}' must be an integer", source, k);
    dst = j[k].get<int64_t>();
  };
  auto get_double = [&](const char* k, double& dst, double if_null) {
    if (!j.contains(k)) return;
    if (j[k].is_null()) {
      dst = if_null;
      return;
    }
    if (!j[k].is_number()) fail("{}: '{}' must be a number", source, k);
    dst = j[k].get<double>();
  };
  auto get_bool = [&](const char* k, bool& dst) {
    if (!j.contains(k)) return;
    if (!j[k].is_boolean()) fail("{}: '{}' must be true or false", source, k);
    dst = j[k].get<bool>();
  };
  auto int_list = [&](const char* k) {
    if (!j[k].is_array()) fail("{}: '{}' must be a list of integers", source, k);
    std::vector<int64_t> v;
    for (auto& x : j[k]) {
      if (!x.is_number_integer()) fail("{}: '{}' must be a list of integers", source, k);
      v.push_back(x.get<int64_t>());
    }
    return v;
  };
  if (j.contains("ch_mult") || j.contains("z_channels")) {  // BFL AutoEncoderParams
    int64_t ch = 128;
    get_int("ch", ch);
    get_int("in_channels", c.in_channels);
    get_int("out_ch", c.out_channels);
    get_int("num_res_blocks", c.layers_per_block);
    get_int("z_channels", c.latent_channels);
    get_double("scale_factor", c.scaling_factor, 1.0);
    get_double("shift_factor", c.shift_factor, 0.0);
    if (j.contains("ch_mult")) {
      c.block_out_channels.clear();
      for (auto m : int_list("ch_mult")) c.block_out_channels.push_back(ch * m);
    }
    if (c.block_out_channels.front() != ch)
      fail("{}: ch_mult must start with 1 (BFL's conv_in width ch equals the first level's width)", source);
  } else {  // diffusers AutoencoderKL
    if (j.contains("_class_name") && j["_class_name"] != "AutoencoderKL")
      fail("{}: _class_name is {}, expected AutoencoderKL (the FLUX/SD3 VAE)", source, j["_class_name"].dump());
    for (auto key : {"down_block_types", "up_block_types"}) {
      if (!j.contains(key)) continue;
      std::string want = std::string(key) == "down_block_types" ? "DownEncoderBlock2D" : "UpDecoderBlock2D";
      for (auto& t : j[key])
        if (t != want) fail("{}: {} entry {} is not supported (only {})", source, key, t.dump(), want);
    }
    if (j.contains("act_fn") && j["act_fn"] != "silu")
      fail("{}: act_fn {} is not supported (only silu)", source, j["act_fn"].dump());
    get_int("in_channels", c.in_channels);
    get_int("out_channels", c.out_channels);
    if (j.contains("block_out_channels")) c.block_out_channels = int_list("block_out_channels");
    get_int("layers_per_block", c.layers_per_block);
    get_int("latent_channels", c.latent_channels);
    get_int("norm_num_groups", c.norm_num_groups);
    get_double("scaling_factor", c.scaling_factor, 1.0);
    get_double("shift_factor", c.shift_factor, 0.0);
    c.use_quant_conv = c.use_post_quant_conv = true;  // diffusers' defaults
    get_bool("use_quant_conv", c.use_quant_conv);
    get_bool("use_post_quant_conv", c.use_post_quant_conv);
    get_bool("mid_block_add_attention", c.mid_attention);
  }
  c.validate(source);
  return c;
}

AutoencoderConfig AutoencoderConfig::infer_from_weights(const std::map<std::string, at::Tensor>& t,
                                                        const std::string& source) {
  auto need = [&](const std::string& n) -> const at::Tensor& {
    auto it = t.find(n);
    if (it == t.end())
      fail("{}: tensor '{}' is missing, so this is not a FLUX/BFL autoencoder checkpoint (expected ae.safetensors "
           "names like encoder.down.0.block.0.conv1.weight, or a diffusers AutoencoderKL directory)",
           source, n);
    return it->second;
  };
  AutoencoderConfig c;
  c.in_channels = need("encoder.conv_in.weight").size(1);
  c.out_channels = need("decoder.conv_out.weight").size(0);
  c.latent_channels = need("decoder.conv_in.weight").size(1);
  c.block_out_channels.clear();
  for (int64_t i = 0; t.count(fmt::format("encoder.down.{}.block.0.conv2.weight", i)); ++i)
    c.block_out_channels.push_back(t.at(fmt::format("encoder.down.{}.block.0.conv2.weight", i)).size(0));
  if (c.block_out_channels.empty()) need("encoder.down.0.block.0.conv2.weight");
  c.layers_per_block = 0;
  while (t.count(fmt::format("encoder.down.0.block.{}.conv1.weight", c.layers_per_block))) ++c.layers_per_block;
  c.use_quant_conv = t.count("quant_conv.weight") > 0;
  c.use_post_quant_conv = t.count("post_quant_conv.weight") > 0;
  c.mid_attention = t.count("encoder.mid.attn_1.q.weight") > 0;
  if (c.latent_channels != 16)
    fail("{}: the autoencoder has {} latent channels; only FLUX's 16-channel AE comes without a config. Put a "
         "config.json (diffusers AutoencoderKL, with scaling_factor and shift_factor) beside the weights",
         source, c.latent_channels);
  c.validate(source);
  return c;
}

nlohmann::json AutoencoderConfig::to_diffusers_json() const {
  nlohmann::json j;
  j["_class_name"] = "AutoencoderKL";
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["block_out_channels"] = block_out_channels;
  j["down_block_types"] = std::vector<std::string>(block_out_channels.size(), "DownEncoderBlock2D");
  j["up_block_types"] = std::vector<std::string>(block_out_channels.size(), "UpDecoderBlock2D");
  j["layers_per_block"] = layers_per_block;
  j["latent_channels"] = latent_channels;
  j["norm_num_groups"] = norm_num_groups;
  j["act_fn"] = "silu";
  j["scaling_factor"] = scaling_factor;
  j["shift_factor"] = shift_factor;
  j["use_quant_conv"] = use_quant_conv;
  j["use_post_quant_conv"] = use_post_quant_conv;
  j["mid_block_add_attention"] = mid_attention;
  return j;
}

// ---------------------------------------------------------------------------------------------------- blocks

static nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(1e-6).affine(true));
}

static nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = -1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad < 0 ? k / 2 : pad).bias(true));
}

AEResnetBlockImpl::AEResnetBlockImpl(int64_t in, int64_t out, int64_t groups) {
  norm1 = register_module("norm1", group_norm(groups, in));
  conv1 = register_module("conv1", conv(in, out, 3));
  norm2 = register_module("norm2", group_norm(groups, out));
  conv2 = register_module("conv2", conv(out, out, 3));
  if (in != out) nin_shortcut = register_module("nin_shortcut", conv(in, out, 1));
}

at::Tensor AEResnetBlockImpl::forward(const at::Tensor& x) {
  auto h = conv1(torch::silu(norm1(x)));
  h = conv2(torch::silu(norm2(h)));
  return (nin_shortcut ? nin_shortcut(x) : x) + h;
}

AEAttnBlockImpl::AEAttnBlockImpl(int64_t c, int64_t groups) {
  norm = register_module("norm", group_norm(groups, c));
  q = register_module("q", conv(c, c, 1));
  k = register_module("k", conv(c, c, 1));
  v = register_module("v", conv(c, c, 1));
  proj_out = register_module("proj_out", conv(c, c, 1));
}

at::Tensor AEAttnBlockImpl::forward(const at::Tensor& x) {
  auto h = norm(x);
  const auto B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto tokens = [&](const at::Tensor& t) { return t.reshape({B, 1, C, H * W}).transpose(2, 3); };  // [B,1,HW,C]
  auto o = at::scaled_dot_product_attention(tokens(q(h)), tokens(k(h)), tokens(v(h)));
  o = o.transpose(2, 3).reshape({B, C, H, W});
  return x + proj_out(o);
}

AEDownsampleImpl::AEDownsampleImpl(int64_t c) { conv = register_module("conv", iomm::conv(c, c, 3, 2, 0)); }

at::Tensor AEDownsampleImpl::forward(const at::Tensor& x) {
  return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));
}

AEUpsampleImpl::AEUpsampleImpl(int64_t c) { conv = register_module("conv", iomm::conv(c, c, 3)); }

at::Tensor AEUpsampleImpl::forward(const at::Tensor& x) {
  const std::array<int64_t, 2> size{x.size(2) * 2, x.size(3) * 2};
  return conv(at::upsample_nearest2d(x, c10::IntArrayRef(size)));
}

AELevelImpl::AELevelImpl(int64_t in, int64_t out, int64_t blocks, int64_t groups, bool down, bool up) {
  block = register_module("block", nn::ModuleList());
  for (int64_t j = 0; j < blocks; ++j) block->push_back(AEResnetBlock(j == 0 ? in : out, out, groups));
  if (down) downsample = register_module("downsample", AEDownsample(out));
  if (up) upsample = register_module("upsample", AEUpsample(out));
}

AEMidImpl::AEMidImpl(int64_t c, int64_t groups, bool attention) {
  block_1 = register_module("block_1", AEResnetBlock(c, c, groups));
  if (attention) attn_1 = register_module("attn_1", AEAttnBlock(c, groups));
  block_2 = register_module("block_2", AEResnetBlock(c, c, groups));
}

at::Tensor AEMidImpl::forward(const at::Tensor& x) {
  auto h = block_1(x);
  if (attn_1) h = attn_1(h);
  return block_2(h);
}

AEEncoderImpl::AEEncoderImpl(const AutoencoderConfig& c) {
  const auto& ch = c.block_out_channels;
  const int64_t n = static_cast<int64_t>(ch.size()), g = c.norm_num_groups;
  conv_in = register_module("conv_in", conv(c.in_channels, ch[0], 3));
  down = register_module("down", nn::ModuleList());
  for (int64_t i = 0; i < n; ++i)
    down->push_back(AELevel(i == 0 ? ch[0] : ch[i - 1], ch[i], c.layers_per_block, g, i != n - 1, false));
  mid = register_module("mid", AEMid(ch.back(), g, c.mid_attention));
  norm_out = register_module("norm_out", group_norm(g, ch.back()));
  conv_out = register_module("conv_out", conv(ch.back(), 2 * c.latent_channels, 3));
}

at::Tensor AEEncoderImpl::forward(const at::Tensor& x) {
  auto h = conv_in(x);
  for (auto& m : *down) {
    auto* level = m->as<AELevelImpl>();
    for (auto& b : *level->block) h = b->as<AEResnetBlockImpl>()->forward(h);
    if (level->downsample) h = level->downsample(h);
  }
  h = mid(h);
  return conv_out(torch::silu(norm_out(h)));
}

AEDecoderImpl::AEDecoderImpl(const AutoencoderConfig& c) {
  const auto& ch = c.block_out_channels;
  const int64_t n = static_cast<int64_t>(ch.size()), g = c.norm_num_groups;
  conv_in = register_module("conv_in", conv(c.latent_channels, ch.back(), 3));
  mid = register_module("mid", AEMid(ch.back(), g, c.mid_attention));
  up = register_module("up", nn::ModuleList());
  for (int64_t i = 0; i < n; ++i)  // level i reads the output of level i+1 (the deepest level reads mid's)
    up->push_back(AELevel(ch[std::min(i + 1, n - 1)], ch[i], c.layers_per_block + 1, g, false, i != 0));
  norm_out = register_module("norm_out", group_norm(g, ch[0]));
  conv_out = register_module("conv_out", conv(ch[0], c.out_channels, 3));
}

at::Tensor AEDecoderImpl::forward(const at::Tensor& z) {
  auto h = mid(conv_in(z));
  for (int64_t i = static_cast<int64_t>(up->size()) - 1; i >= 0; --i) {
    auto* level = up->ptr(i)->as<AELevelImpl>();
    for (auto& b : *level->block) h = b->as<AEResnetBlockImpl>()->forward(h);
    if (level->upsample) h = level->upsample(h);
  }
  return conv_out(torch::silu(norm_out(h)));
}

FluxAEImpl::FluxAEImpl(const AutoencoderConfig& c) : config(c) {
  c.validate("autoencoder config");
  encoder = register_module("encoder", AEEncoder(c));
  decoder = register_module("decoder", AEDecoder(c));
  if (c.use_quant_conv) quant_conv = register_module("quant_conv", conv(2 * c.latent_channels, 2 * c.latent_channels, 1));
  if (c.use_post_quant_conv)
    post_quant_conv = register_module("post_quant_conv", conv(c.latent_channels, c.latent_channels, 1));
}

at::Tensor FluxAEImpl::encode_moments(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != config.in_channels)
    fail("autoencoder encode: expected images [B, {}, H, W], got {}", config.in_channels, shape(x));
  const int64_t f = config.downsample_factor();
  if (x.size(2) % f != 0 || x.size(3) % f != 0)
    fail("autoencoder encode: image size {}x{} is not a multiple of the downsample factor {}; crop or resize it",
         x.size(2), x.size(3), f);
  auto m = encoder(x);
  return quant_conv ? quant_conv(m) : m;
}

at::Tensor FluxAEImpl::encode_mean(const at::Tensor& x) {
  return encode_moments(x).narrow(1, 0, config.latent_channels);
}

at::Tensor FluxAEImpl::decode_raw(const at::Tensor& z) {
  if (z.dim() != 4 || z.size(1) != config.latent_channels)
    fail("autoencoder decode: expected latents [B, {}, h, w], got {}", config.latent_channels, shape(z));
  return decoder(post_quant_conv ? post_quant_conv(z) : z);
}

at::Tensor FluxAEImpl::encode_latent(const at::Tensor& x) {
  return (encode_mean(x) - config.shift_factor) * config.scaling_factor;
}

at::Tensor FluxAEImpl::decode_latent(const at::Tensor& z) {
  return decode_raw(z / config.scaling_factor + config.shift_factor);
}

// Blends the last `extent` rows (dim 2) or columns (dim 3) of `a` into the first ones of `b`, in place:
// b[y] = a[-extent + y]·(1 − y/extent) + b[y]·(y/extent) (diffusers' blend_v / blend_h).
static void blend(const at::Tensor& a, at::Tensor& b, int64_t dim, int64_t extent) {
  extent = std::min({a.size(dim), b.size(dim), extent});
  if (extent <= 0) return;
  auto shape = std::vector<int64_t>{1, 1, 1, 1};
  shape[dim] = extent;
  auto w = (torch::arange(extent, b.options()) / static_cast<double>(extent)).reshape(shape);
  auto head = b.narrow(dim, 0, extent);
  head.copy_(a.narrow(dim, a.size(dim) - extent, extent) * (1 - w) + head * w);
}

at::Tensor FluxAEImpl::decode_raw_tiled(const at::Tensor& z, int64_t tile_latent, double overlap) {
  if (z.dim() != 4 || z.size(1) != config.latent_channels)
    fail("autoencoder decode: expected latents [B, {}, h, w], got {}", config.latent_channels, shape(z));
  if (!(overlap >= 0 && overlap < 1)) fail("tiled decode: overlap must be in [0, 1) (got {})", overlap);
  const int64_t tile_sample = tile_latent * config.downsample_factor();
  const auto stride = static_cast<int64_t>(static_cast<double>(tile_latent) * (1 - overlap));
  const auto extent = static_cast<int64_t>(static_cast<double>(tile_sample) * overlap);
  const int64_t limit = tile_sample - extent;
  if (tile_latent <= 0 || stride <= 0)
    fail("tiled decode: tile size {} with overlap {} gives no tile stride; use a larger tile", tile_latent, overlap);
  const int64_t H = z.size(2), W = z.size(3);
  std::vector<std::vector<at::Tensor>> rows;
  for (int64_t i = 0; i < H; i += stride) {
    auto& row = rows.emplace_back();
    for (int64_t j = 0; j < W; j += stride) {
      auto tile = z.narrow(2, i, std::min(tile_latent, H - i)).narrow(3, j, std::min(tile_latent, W - j));
      row.push_back(decoder(post_quant_conv ? post_quant_conv(tile) : tile));
    }
  }
  std::vector<at::Tensor> out_rows;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<at::Tensor> parts;
    for (size_t j = 0; j < rows[i].size(); ++j) {
      auto& tile = rows[i][j];
      if (i > 0) blend(rows[i - 1][j], tile, 2, extent);
      if (j > 0) blend(rows[i][j - 1], tile, 3, extent);
      parts.push_back(tile.narrow(2, 0, std::min(limit, tile.size(2))).narrow(3, 0, std::min(limit, tile.size(3))));
    }
    out_rows.push_back(torch::cat(parts, 3));
  }
  return torch::cat(out_rows, 2);
}

// ---------------------------------------------------------------------------------------------------- loading

FluxAE load_flux_ae(const std::string& path, const std::string& device, const std::string& dtype, bool freeze) {
  if (path.empty())
    fail("no autoencoder given: pass a diffusers AutoencoderKL directory or FLUX's ae.safetensors");
  if (!fs::exists(path))
    fail("{}: does not exist; pass a diffusers AutoencoderKL directory (config.json + "
         "diffusion_pytorch_model.safetensors) or FLUX's ae.safetensors",
         path);
  auto tensors = load_tensors(path);
  if (is_diffusers_vae(tensors)) tensors = vae_from_diffusers(tensors);
  fs::path cfg_path = fs::path(path) / "config.json";
  AutoencoderConfig c;
  if (fs::is_directory(path) && fs::exists(cfg_path)) {
    c = AutoencoderConfig::from_json(read_json_file(cfg_path.string()), cfg_path.string());
  } else {
    c = AutoencoderConfig::infer_from_weights(tensors, path);
  }
  FluxAE m(c);
  load_frozen(*m, tensors, path, device, dtype, /*trainable=*/!freeze);
  return m;
}

at::Tensor FluxAutoencoder::encode(const at::Tensor& image) { return model_->encode_latent(image); }
at::Tensor FluxAutoencoder::decode(const at::Tensor& latent) {
  if (tile_latent_ > 0 && latent.dim() == 4 && (latent.size(2) > tile_latent_ || latent.size(3) > tile_latent_))
    return model_->decode_raw_tiled(latent / model_->config.scaling_factor + model_->config.shift_factor,
                                    tile_latent_, overlap_);
  return model_->decode_latent(latent);
}

void FluxAutoencoder::set_tiling(int64_t tile_latent, double overlap) {
  if (tile_latent < 0 || !(overlap >= 0 && overlap < 1))
    fail("autoencoder tiling: tile size must be >= 0 (0 = off) and overlap in [0, 1) (got {}, {})", tile_latent,
         overlap);
  tile_latent_ = tile_latent;
  overlap_ = overlap;
}

std::string FluxAutoencoder::fingerprint() const {
  TensorMap encoder;  // what encode() reads: the decoder can change without changing a latent
  for (auto& [name, t] : module_tensors(*model_))
    if (name.rfind("decoder.", 0) != 0 && name.rfind("post_quant_conv.", 0) != 0) encoder.emplace(name, t);
  const auto& c = model_->config;
  return fmt::format("{} scale {} shift {}", fingerprint_tensors(encoder), c.scaling_factor, c.shift_factor);
}

std::string FluxAutoencoder::describe() const {
  const auto& c = model_->config;
  return fmt::format("FLUX autoencoder ({} latent channels, /{}, scale {}, shift {})", c.latent_channels,
                     c.downsample_factor(), c.scaling_factor, c.shift_factor);
}

std::shared_ptr<Autoencoder> open_autoencoder(const std::string& spec, const std::string& device,
                                              const std::string& dtype) {
  if (spec == "identity" || spec == "pixel") return std::make_shared<IdentityAutoencoder>(3);
  if (spec == "learned")
    fail("model.autoencoder = \"learned\" asks `iomm demo` to train the tiny world's autoencoder first "
         "(configs/world/autoencoder.toml); elsewhere train one with `iomm train --config "
         "configs/world/autoencoder.toml --out RUN` and set model.autoencoder = \"RUN/model\"");
  return std::make_shared<FluxAutoencoder>(load_flux_ae(spec, device, dtype));
}

// ---------------------------------------------------------------------------------------------------- components

static at::Tensor on_model(const FluxAE& m, const at::Tensor& x) {
  auto p = m->parameters().front();
  return x.to(p.device(), p.scalar_type());
}

ForwardComponent vae_encode_forward_component() {
  ForwardComponent c;
  c.name = "vae-encode";
  c.help = "FLUX autoencoder encoder (diffusers AutoencoderKL encode(x).latent_dist.mean, before scale/shift): "
           "sample [B,3,H,W] in [-1,1] -> latent_dist.mean [B,16,H/8,W/8]";
  c.inputs = {"sample"};
  c.outputs = {"latent_dist.mean"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_flux_ae(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m](const TensorMap& in) mutable {
      return TensorMap{{"latent_dist.mean", m->encode_mean(on_model(m, in.at("sample"))).to(torch::kFloat32)}};
    }};
  };
  return c;
}

ForwardComponent vae_decode_forward_component() {
  ForwardComponent c;
  c.name = "vae-decode";
  c.help = "FLUX autoencoder decoder (diffusers AutoencoderKL decode(z).sample, a raw latent: no scale/shift): "
           "z [B,16,h,w] [+ tile_latent_size, tile_overlap: tiled_decode] -> sample [B,3,8h,8w]";
  c.inputs = {"z"};
  c.optional_inputs = {"tile_latent_size", "tile_overlap"};  // scalars: diffusers' tiled_decode when given
  c.outputs = {"sample"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_flux_ae(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m](const TensorMap& in) mutable {
      auto z = on_model(m, in.at("z"));
      if (in.count("tile_latent_size")) {
        double overlap = in.count("tile_overlap") ? in.at("tile_overlap").item<double>() : 0.25;
        auto tile = in.at("tile_latent_size").item<int64_t>();
        return TensorMap{{"sample", m->decode_raw_tiled(z, tile, overlap).to(torch::kFloat32)}};
      }
      return TensorMap{{"sample", m->decode_raw(z).to(torch::kFloat32)}};
    }};
  };
  return c;
}

}  // namespace iomm
