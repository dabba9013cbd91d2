// All checkpoint-name conversion lives here. iomm's modules are named like the reference (transformers) modules,
// so conversion is only a matter of prefixes between the layouts users bring:
//   Qwen2ForCausalLM          model.*, lm_head.*            (iomm's own names)
//   Qwen2Model                *                             (no prefix, no head)
//   InternVL3 original        language_model.model.*, language_model.lm_head.*
//   InternVL3 -hf             model.language_model.*, lm_head.*
// and for the rest of InternVL3 (iomm's names = the ORIGINAL checkpoint names):
//   original                  vision_model.*, mlp1.{0,1,3}.*, language_model.{model,lm_head}.*
//   -hf, legacy save          vision_tower.*, multi_modal_projector.*, language_model.{model,lm_head}.*
//   -hf, transformers ≥4.52   model.vision_tower.*, model.multi_modal_projector.*, model.language_model.*, lm_head.*
// The -hf vision names differ inside the tower too (encoder.layer.N, split q/k/v, lambda_1, ...; research mllm.md
// §2.2); they are converted back to the original ones.
#pragma once
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace iomm {

using TensorMap = std::map<std::string, at::Tensor>;

// The Qwen2 LLM's tensors in Qwen2ForCausalLM names; tensors of other parts (vision tower, projector) are left out.
TensorMap qwen2_names(const TensorMap& checkpoint);

// The vision tower's tensors in iomm's InternViT names (embeddings.*, encoder.layers.N.*, no prefix), from a whole
// InternVL checkpoint of any layout above (other parts are left out) or a stand-alone tower (no prefix, either
// naming). The -hf split attention.{q,k,v}_proj are fused into attn.qkv (rows q, k, v).
TensorMap internvit_names(const TensorMap& checkpoint);

// A whole InternVL checkpoint in iomm's (original) names: vision_model.*, mlp1.*, language_model.model.*,
// language_model.lm_head.*. Tensors that belong to no known part keep their names (so that loading reports them).
TensorMap internvl_names(const TensorMap& checkpoint);

}  // namespace iomm

// ---- FLUX MM-DiT: diffusers FluxTransformer2DModel names <-> BFL (iomm's own) names.
// diffusers splits the fused projections (double blocks' qkv -> to_q/to_k/to_v and add_q/k/v_proj; single blocks'
// linear1 -> to_q/to_k/to_v/proj_mlp), renames the QK norms (scale -> weight), and stores the final layer's
// modulation as (scale, shift) where BFL has (shift, scale): the halves are swapped both ways.
namespace iomm {

// True when the tensors are in diffusers FluxTransformer2DModel names (x_embedder.weight present).
bool is_diffusers_flux(const TensorMap& checkpoint);
// diffusers -> BFL names. Tensors that belong to no known module keep their names (load_weights reports them).
TensorMap flux_from_diffusers(const TensorMap& diffusers);
// BFL -> diffusers names. diffusers always has q/k/v biases and a pooled-vector embedder: absent ones (qkv_bias
// false, no vector_in) are written as zeros, which makes the exported model compute the same function (a zero
// text_embedder adds 0 whatever the pooled input; its width is `pooled_dim_if_absent`).
TensorMap flux_to_diffusers(const TensorMap& bfl, int64_t pooled_dim_if_absent = 768);

}  // namespace iomm

// ---- FLUX autoencoder: diffusers AutoencoderKL names <-> BFL (iomm's own) names (ae.safetensors layout).
//   encoder.down.I.block.J.*        encoder.down_blocks.I.resnets.J.*     (nin_shortcut <-> conv_shortcut)
//   encoder.down.I.downsample.conv  encoder.down_blocks.I.downsamplers.0.conv
//   {en,de}coder.mid.block_{1,2}    {en,de}coder.mid_block.resnets.{0,1}
//   {en,de}coder.mid.attn_1.{norm,q,k,v,proj_out}  ...mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}
//                                   (1x1 conv weights [C,C,1,1] <-> Linear weights [C,C]; diffusers' deprecated
//                                   query/key/value/proj_attn names are read too)
//   decoder.up.L.block.J.*          decoder.up_blocks.(N-1-L).resnets.J.*  (reversed level order)
//   decoder.up.L.upsample.conv      decoder.up_blocks.(N-1-L).upsamplers.0.conv
//   {en,de}coder.norm_out           {en,de}coder.conv_norm_out
// conv_in, conv_out, quant_conv and post_quant_conv keep their names.
namespace iomm {

// True when the tensors are in diffusers AutoencoderKL names (encoder.down_blocks.* / encoder.conv_norm_out.*).
bool is_diffusers_vae(const TensorMap& checkpoint);
// diffusers -> BFL names. Tensors that belong to no known module keep their names (load_weights reports them).
TensorMap vae_from_diffusers(const TensorMap& diffusers);
// BFL -> diffusers names (fails on tensors with no diffusers name).
TensorMap vae_to_diffusers(const TensorMap& bfl);

}  // namespace iomm

// ---- Z-Image S3-DiT: the original Tongyi-MAI checkpoint names -> diffusers ZImageTransformer2DModel names (iomm's
// own), as diffusers' convert_z_image_transformer_checkpoint_to_diffusers does: the "model.diffusion_model." prefix
// is dropped, final_layer./x_embedder. become all_final_layer.2-1./all_x_embedder.2-1., attention.out -> to_out.0,
// q_norm/k_norm -> norm_q/norm_k, the fused attention.qkv splits into to_q/to_k/to_v, norm_final.weight is dropped.
namespace iomm {

// True when the tensors are in the original Z-Image names (a fused attention.qkv or an unprefixed x_embedder).
bool is_original_zimage(const TensorMap& checkpoint);
TensorMap zimage_from_original(const TensorMap& original);

}  // namespace iomm
