#include "model/generator.h"

#include <filesystem>

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/hf_config.h"
#include "models/weights.h"

namespace iomm {

namespace fs = std::filesystem;

int64_t GeneratorConfig::latent_channels() const {
  return arch == "zimage" ? zimage.in_channels : mmdit.latent_channels();
}

int64_t GeneratorConfig::patch_size() const { return arch == "zimage" ? zimage.patch_size : mmdit.patch_size; }

int64_t GeneratorConfig::context_dim() const { return arch == "zimage" ? zimage.cap_feat_dim : mmdit.context_in_dim; }

GeneratorConfig GeneratorConfig::from_config(Config& cfg, const std::string& prefix, int64_t context_dim) {
  GeneratorConfig c;
  c.arch = cfg.get_choice(prefix + ".arch", c.arch, {"mmdit", "zimage"});
  c.detail_head_channels = cfg.get_int(prefix + ".detail_head_channels", c.detail_head_channels, 0, 1024);
  std::string key;
  if (c.arch == "zimage") {
    if (c.detail_head_channels > 0)
      fail("{}: {}.detail_head_channels = {} is an MM-DiT option; remove it for arch = \"zimage\"", cfg.source(),
           prefix, c.detail_head_channels);
    c.zimage = ZImageConfig::from_config(cfg, prefix, context_dim);
    if (c.zimage.f_patch_size != 1)
      fail("{}: {}.f_patch_size = {}; IOMM generates single images (f_patch_size 1)", cfg.source(), prefix,
           c.zimage.f_patch_size);
    key = "cap_feat_dim";
  } else {
    c.mmdit = MMDiTConfig::from_config(cfg, prefix, context_dim);
    key = "context_in_dim";
    if (c.mmdit.vec_in_dim != 0 && c.mmdit.vec_in_dim != context_dim)
      fail("{}: {}.vec_in_dim = {}; IOMM feeds the MM-DiT's pooled vector the mean of the MLLM's hidden states "
           "(width {}), so set it to {} or remove the key (0: no pooled vector, the paper's set-up)",
           cfg.source(), prefix, c.mmdit.vec_in_dim, context_dim, context_dim);
  }
  if (c.context_dim() != context_dim)
    fail("{}: {}.{} = {} but the MLLM has width {}; the generator reads the MLLM's hidden states, so remove the "
         "key or set it to {}",
         cfg.source(), prefix, key, c.context_dim(), context_dim, context_dim);
  return c;
}

at::Tensor pooled_condition(const at::Tensor& h, const at::Tensor& h_mask) {
  if (!h_mask.defined()) return h.mean(1);
  auto m = h_mask.to(h.scalar_type()).unsqueeze(-1);
  return (h * m).sum(1) / m.sum(1).clamp_min(1.0);
}

namespace {

class MMDiTGenerator : public Generator {
 public:
  MMDiTGenerator(const GeneratorConfig& c, const torch::TensorOptions& opts)
      : Generator(c), net_(c.mmdit, opts) {
    // Registered under the MM-DiT, so that training, EMA, checkpoints and the saved generator carry it as
    // "detail_head.*" beside the BFL names (a FLUX tool would see the extra tensors and refuse them).
    if (c.detail_head_channels > 0)
      head_ = net_->register_module(
          "detail_head", DetailHead(c.mmdit.latent_channels(), c.detail_head_channels, opts));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& h, const at::Tensor& h_mask,
                     int64_t latent_h, int64_t latent_w) override {
    MMDiTInput in;
    in.img = x;
    in.img_ids = image_position_ids(latent_h, latent_w, config_.mmdit.patch_size).to(x.device());
    in.txt = h.to(x.scalar_type());
    in.txt_ids = torch::zeros({h.size(1), 3}, torch::TensorOptions().device(x.device()));
    in.timesteps = t.to(x.device(), x.scalar_type());
    in.txt_mask = h_mask;
    if (config_.mmdit.vec_in_dim > 0) in.y = pooled_condition(in.txt, h_mask);
    auto out = net_->forward(in);
    if (!head_) return out;
    int64_t p = config_.mmdit.patch_size;
    auto refined = head_->forward(unpack_latents(out, latent_h, latent_w, p),
                                  unpack_latents(x, latent_h, latent_w, p), in.timesteps);
    return pack_latents(refined, p);
  }
  torch::nn::Module& module() override { return *net_; }
  const torch::nn::Module& module() const override { return *net_; }
  void init_weights(uint64_t seed) override {
    net_->init_weights(seed);  // also touches the head's tensors (it is registered under the net) ...
    if (head_) head_->init_weights(seed + 1);  // ... so the head's own initialisation comes after
  }
  void set_activation_checkpointing(int64_t every) override { net_->checkpoint_every = every; }
  void save(const std::string& dir) const override { save_mmdit(net_, dir, "bfl"); }
  void load_weights(const std::string& dir) override {
    auto path = dir + "/model.safetensors";
    iomm::load_weights(*net_, load_tensors(path), path);
  }

 private:
  MMDiT net_;
  DetailHead head_{nullptr};
};

class ZImageGenerator : public Generator {
 public:
  ZImageGenerator(const GeneratorConfig& c, const torch::TensorOptions& opts)
      : Generator(c), net_(c.zimage, opts) {}

  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& h, const at::Tensor& h_mask,
                     int64_t latent_h, int64_t latent_w) override {
    int64_t p = config_.zimage.patch_size;
    auto latents = unpack_latents(x, latent_h, latent_w, p);
    auto v = zimage_velocity(net_, latents, t.to(x.device(), x.scalar_type()), h.to(x.scalar_type()),
                             h_mask.defined() ? h_mask.to(torch::kBool) : h_mask);
    return pack_latents(v, p);
  }
  torch::nn::Module& module() override { return *net_; }
  const torch::nn::Module& module() const override { return *net_; }
  void init_weights(uint64_t seed) override { net_->init_weights(seed); }
  void set_activation_checkpointing(int64_t every) override { net_->checkpoint_every = every; }
  void save(const std::string& dir) const override {
    fs::create_directories(dir);
    write_file_atomic(dir + "/config.json", config_.zimage.to_diffusers_json().dump(2) + "\n");
    save_tensors(dir + "/diffusion_pytorch_model.safetensors", module_state(*net_), {{"format", "pt"}});
  }
  void load_weights(const std::string& dir) override {
    iomm::load_weights(*net_, load_tensors(dir), dir);
  }

 private:
  ZImageDiT net_;
};

}  // namespace

std::unique_ptr<Generator> make_generator(const GeneratorConfig& config, const std::string& device,
                                          const std::string& dtype) {
  auto opts = torch::TensorOptions().device(torch::Device(device)).dtype(dtype_from_name(dtype));
  if (config.arch == "zimage") return std::make_unique<ZImageGenerator>(config, opts);
  return std::make_unique<MMDiTGenerator>(config, opts);
}

}  // namespace iomm
