// IOMM's training objective (paper §3, Alg. 1): the conditioner turns each sample's condition into h (image
// conditions with Masked Image Modeling: c_img ⊙ M, through the RQA and the frozen MLLM's KV-cached prefix), and the
// generator is trained by rectified flow on the autoencoder's latents:
//   x = AE(image) (or its cached latents),  x_t = (1 − t)·x + t·z,  loss = mean ‖v(x_t, t, h) − (z − x)‖²
// tests/fixtures/iomm_step (scripts/dump_iomm_step.py) pins this against an independent PyTorch reference.
#include <torch/torch.h>

#include "model/iomm_model.h"

#include "conditioning/mask_image_tokens.h"

namespace iomm {

FlowLoss IommModel::loss(const TrainingBatch& b, const TimestepSampling& timesteps, at::Generator& gen) {
  auto cond = condition(b.conds, /*mim=*/true, &gen, b.keep);
  auto p = generator_->module().parameters().front();
  at::Tensor x;
  {
    torch::NoGradGuard no_grad;  // the autoencoder is frozen; cached latents are what it would give (features.h)
    auto latents = b.latents.defined()
                       ? b.latents.to(p.device(), p.scalar_type())
                       : autoencoder_->encode(b.images.to(p.device(), frozen_dtype())).to(p.scalar_type());
    x = pack_latents(latents, config_.generator.patch_size());
  }
  int64_t B = x.size(0);
  // Draw on the CPU generator, then move: identical draws on every device.
  auto t = b.t.defined() ? b.t : sample_timesteps(timesteps, B, x.size(1), gen);
  auto z = b.noise.defined() ? b.noise : at::randn(x.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat));
  auto fp = flow_interpolate(x, z.to(x.device(), x.scalar_type()), t.to(x.device()));
  auto v = velocity(fp.x_t, t.to(x.device()), cond);
  auto per = (v.to(torch::kFloat) - fp.target.to(torch::kFloat)).pow(2).mean({1, 2});
  return {per.mean(), per.detach()};
}

SampleNoise IommModel::draw_sample_noise(bool masked, const TimestepSampling& timesteps, at::Generator& gen) const {
  SampleNoise d;
  const auto& cc = config_.conditioner;
  if (masked && cc.mask_ratio > 0) {
    std::vector<int64_t> shape{conditioner_->image_tokens_per_image()};
    if (cc.mask_granularity == MaskGranularity::element) shape.push_back(conditioner_->mllm->config.llm.hidden_size);
    d.keep = draw_keep_mask(shape, cc.mask_ratio, gen);
  }
  const int64_t n = image_seq_len(), p = config_.generator.patch_size();
  d.t = sample_timesteps(timesteps, 1, n, gen);
  d.noise = at::randn({1, n, config_.generator.latent_channels() * p * p}, gen,
                      torch::TensorOptions().dtype(torch::kFloat));
  return d;
}

void set_batch_noise(TrainingBatch& batch, const std::vector<SampleNoise>& draws) {
  std::vector<at::Tensor> keep, t, noise;
  for (auto& d : draws) {
    if (d.keep.defined()) keep.push_back(d.keep);
    t.push_back(d.t);
    noise.push_back(d.noise);
  }
  batch.keep = keep.empty() ? at::Tensor() : torch::stack(keep);
  batch.t = torch::cat(t);
  batch.noise = torch::cat(noise);
}

ImageFeatures IommModel::encode_features(const at::Tensor& images) {
  return encode_image_features(*autoencoder_, *conditioner_->mllm, images, config_.device, config_.frozen_dtype);
}

data::FeatureFingerprints IommModel::feature_fingerprints() const {
  return iomm::feature_fingerprints(*autoencoder_, *conditioner_->mllm, config_.mllm, config_.conditioner.templates,
                                    config_.resolution, config_.frozen_dtype);
}

}  // namespace iomm
