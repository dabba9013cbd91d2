#include "models/name_conversion.h"

#include <array>
#include <optional>
#include <regex>
#include <set>

#include <ATen/ATen.h>

#include "core/error.h"

namespace iomm {

static bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

static bool any_prefix(const TensorMap& m, const std::string& p) {
  for (auto& [k, v] : m)
    if (starts_with(k, p)) return true;
  return false;
}

TensorMap qwen2_names(const TensorMap& ckpt) {
  TensorMap out;
  if (any_prefix(ckpt, "language_model.")) {  // InternVL original layout
    for (auto& [k, v] : ckpt)
      if (starts_with(k, "language_model.")) out[k.substr(15)] = v;
  } else if (any_prefix(ckpt, "model.language_model.")) {  // InternVL -hf layout
    for (auto& [k, v] : ckpt) {
      if (starts_with(k, "model.language_model.")) out["model." + k.substr(21)] = v;
      else if (starts_with(k, "lm_head.")) out[k] = v;
    }
  } else if (any_prefix(ckpt, "model.")) {  // Qwen2ForCausalLM
    out = ckpt;
  } else {  // bare Qwen2Model
    for (auto& [k, v] : ckpt) out["model." + k] = v;
  }
  return out;
}

// ---- InternViT / InternVL (after qwen2_names; FLUX/diffusers conversions follow at the end of the file)

static const char* const kVisionPrefixes[] = {"vision_model.", "model.vision_tower.", "vision_tower."};
static const char* const kProjectorPrefixes[] = {"model.multi_modal_projector.", "multi_modal_projector."};
static const char* const kLlmPrefixes[] = {"language_model.", "model.language_model.", "lm_head."};

// The part of `k` after the first of `prefixes` it starts with, or nullopt.
template <size_t N>
static std::optional<std::string> strip_any(const std::string& k, const char* const (&prefixes)[N]) {
  for (const char* p : prefixes)
    if (starts_with(k, p)) return k.substr(std::string(p).size());
  return std::nullopt;
}

// Tower-relative -hf names -> original names; original names pass through unchanged.
static TensorMap vit_to_original(const TensorMap& tower) {
  static const std::pair<const char*, const char*> kWhole[] = {
      {"embeddings.cls_token", "embeddings.class_embedding"},
      {"embeddings.position_embeddings", "embeddings.position_embedding"},
      {"embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.weight"},
      {"embeddings.patch_embeddings.projection.bias", "embeddings.patch_embedding.bias"},
  };
  // Names inside encoder.layers.N.
  static const std::pair<const char*, const char*> kInLayer[] = {
      {"lambda_1", "ls1"},
      {"lambda_2", "ls2"},
      {"layernorm_before.", "norm1."},
      {"layernorm_after.", "norm2."},
      {"attention.projection_layer.", "attn.proj."},
  };
  TensorMap out;
  std::map<std::string, std::array<at::Tensor, 3>> split_qkv;  // "encoder.layers.N.attn.qkv.weight" -> q, k, v
  std::map<std::string, std::array<std::string, 3>> split_names;
  for (auto& [k, v] : tower) {
    std::string r = k;
    for (auto& [from, to] : kWhole)
      if (r == from) r = to;
    if (starts_with(r, "encoder.layer.")) r = "encoder.layers." + r.substr(14);
    if (starts_with(r, "encoder.layers.")) {
      size_t dot = r.find('.', 15);
      if (dot != std::string::npos) {
        std::string head = r.substr(0, dot + 1), rest = r.substr(dot + 1);
        for (auto& [from, to] : kInLayer)
          if (starts_with(rest, from)) rest = to + rest.substr(std::string(from).size());
        static const char* const kQkv[] = {"attention.q_proj.", "attention.k_proj.", "attention.v_proj."};
        bool split = false;
        for (int s = 0; s < 3; ++s)
          if (starts_with(rest, kQkv[s])) {
            std::string fused = head + "attn.qkv." + rest.substr(std::string(kQkv[s]).size());
            split_qkv[fused][s] = v;
            split_names[fused][s] = k;
            split = true;
          }
        if (split) continue;
        r = head + rest;
      }
    }
    out[r] = v;
  }
  for (auto& [fused, parts] : split_qkv) {
    if (parts[0].defined() && parts[1].defined() && parts[2].defined()) {
      out[fused] = at::cat({parts[0], parts[1], parts[2]}, 0);
    } else {  // incomplete: keep the parts under their own names, so that loading lists them
      for (int s = 0; s < 3; ++s)
        if (parts[s].defined()) out[split_names[fused][s]] = parts[s];
    }
  }
  return out;
}

TensorMap internvit_names(const TensorMap& ckpt) {
  TensorMap tower;
  bool prefixed = false;
  for (auto& [k, v] : ckpt)
    if (strip_any(k, kVisionPrefixes)) prefixed = true;
  for (auto& [k, v] : ckpt) {
    if (!prefixed) tower[k] = v;
    else if (auto r = strip_any(k, kVisionPrefixes)) tower[*r] = v;
  }
  return vit_to_original(tower);
}

TensorMap internvl_names(const TensorMap& ckpt) {
  static const std::pair<const char*, const char*> kProjector[] = {
      {"layer_norm.", "0."}, {"linear_1.", "1."}, {"linear_2.", "3."}};
  TensorMap tower, llm, out;
  for (auto& [k, v] : ckpt) {
    if (auto r = strip_any(k, kVisionPrefixes)) {
      tower[*r] = v;
    } else if (auto p = strip_any(k, kProjectorPrefixes)) {
      std::string name = k;  // unknown projector tensors keep their name
      for (auto& [from, to] : kProjector)
        if (starts_with(*p, from)) name = "mlp1." + (to + p->substr(std::string(from).size()));
      out[name] = v;
    } else if (strip_any(k, kLlmPrefixes)) {
      llm[k] = v;
    } else {
      out[k] = v;  // mlp1.* (original) and anything unknown
    }
  }
  for (auto& [k, v] : vit_to_original(tower)) out["vision_model." + k] = v;
  for (auto& [k, v] : qwen2_names(llm)) out["language_model." + k] = v;
  return out;
}

}  // namespace iomm

// ---------------------------------------------------------------------------------------------------- FLUX MM-DiT

namespace iomm {

namespace {

// One BFL tensor and the diffusers tensors it is made of (several: concatenated along dim 0 in this order).
struct FluxRule {
  std::string bfl;
  std::vector<std::string> hf;
  bool swap_halves = false;  // final layer modulation: (shift, scale) <-> (scale, shift)
};

int64_t flux_count(const TensorMap& m, const std::string& prefix) {
  int64_t n = 0;
  for (auto& [k, v] : m) {
    if (!starts_with(k, prefix)) continue;
    auto rest = k.substr(prefix.size());
    auto dot = rest.find('.');
    try {
      n = std::max<int64_t>(n, std::stoll(rest.substr(0, dot)) + 1);
    } catch (const std::exception&) {
    }
  }
  return n;
}

std::vector<FluxRule> flux_rules(int64_t n_double, int64_t n_single) {
  std::vector<FluxRule> r;
  auto linear = [&](const std::string& bfl, std::vector<std::string> hf, bool swap = false) {
    for (const char* p : {".weight", ".bias"}) {
      std::vector<std::string> h;
      for (auto& x : hf) h.push_back(x + p);
      r.push_back({bfl + p, h, swap});
    }
  };
  auto norm = [&](const std::string& bfl, const std::string& hf) { r.push_back({bfl + ".scale", {hf + ".weight"}}); };
  linear("img_in", {"x_embedder"});
  linear("txt_in", {"context_embedder"});
  linear("time_in.in_layer", {"time_text_embed.timestep_embedder.linear_1"});
  linear("time_in.out_layer", {"time_text_embed.timestep_embedder.linear_2"});
  linear("vector_in.in_layer", {"time_text_embed.text_embedder.linear_1"});
  linear("vector_in.out_layer", {"time_text_embed.text_embedder.linear_2"});
  linear("guidance_in.in_layer", {"time_text_embed.guidance_embedder.linear_1"});
  linear("guidance_in.out_layer", {"time_text_embed.guidance_embedder.linear_2"});
  for (int64_t i = 0; i < n_double; ++i) {
    auto b = "double_blocks." + std::to_string(i) + ".", h = "transformer_blocks." + std::to_string(i) + ".";
    linear(b + "img_mod.lin", {h + "norm1.linear"});
    linear(b + "txt_mod.lin", {h + "norm1_context.linear"});
    linear(b + "img_attn.qkv", {h + "attn.to_q", h + "attn.to_k", h + "attn.to_v"});
    linear(b + "txt_attn.qkv", {h + "attn.add_q_proj", h + "attn.add_k_proj", h + "attn.add_v_proj"});
    norm(b + "img_attn.norm.query_norm", h + "attn.norm_q");
    norm(b + "img_attn.norm.key_norm", h + "attn.norm_k");
    norm(b + "txt_attn.norm.query_norm", h + "attn.norm_added_q");
    norm(b + "txt_attn.norm.key_norm", h + "attn.norm_added_k");
    linear(b + "img_attn.proj", {h + "attn.to_out.0"});
    linear(b + "txt_attn.proj", {h + "attn.to_add_out"});
    linear(b + "img_mlp.0", {h + "ff.net.0.proj"});
    linear(b + "img_mlp.2", {h + "ff.net.2"});
    linear(b + "txt_mlp.0", {h + "ff_context.net.0.proj"});
    linear(b + "txt_mlp.2", {h + "ff_context.net.2"});
  }
  for (int64_t i = 0; i < n_single; ++i) {
    auto b = "single_blocks." + std::to_string(i) + ".", h = "single_transformer_blocks." + std::to_string(i) + ".";
    linear(b + "modulation.lin", {h + "norm.linear"});
    linear(b + "linear1", {h + "attn.to_q", h + "attn.to_k", h + "attn.to_v", h + "proj_mlp"});
    norm(b + "norm.query_norm", h + "attn.norm_q");
    norm(b + "norm.key_norm", h + "attn.norm_k");
    linear(b + "linear2", {h + "proj_out"});
  }
  linear("final_layer.linear", {"proj_out"});
  linear("final_layer.adaLN_modulation.1", {"norm_out.linear"}, /*swap=*/true);
  return r;
}

at::Tensor swap_halves(const at::Tensor& t) {
  auto h = t.chunk(2, 0);
  return at::cat({h[1], h[0]}, 0);
}

}  // namespace

bool is_diffusers_flux(const TensorMap& m) { return m.count("x_embedder.weight") > 0; }

TensorMap flux_from_diffusers(const TensorMap& hf) {
  TensorMap out;
  std::set<std::string> used;
  for (auto& rule : flux_rules(flux_count(hf, "transformer_blocks."), flux_count(hf, "single_transformer_blocks."))) {
    std::vector<at::Tensor> parts;
    for (auto& n : rule.hf) {
      auto it = hf.find(n);
      if (it != hf.end()) parts.push_back(it->second);
    }
    if (parts.empty()) continue;
    if (parts.size() != rule.hf.size()) continue;  // incomplete group: its parts stay unexpected below
    for (auto& n : rule.hf) used.insert(n);
    auto t = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
    out[rule.bfl] = rule.swap_halves ? swap_halves(t) : t;
  }
  for (auto& [k, v] : hf)
    if (!used.count(k)) out[k] = v;
  return out;
}

TensorMap flux_to_diffusers(const TensorMap& bfl, int64_t pooled_dim_if_absent) {
  auto img_in = bfl.find("img_in.weight");
  if (img_in == bfl.end()) fail("flux_to_diffusers: no img_in.weight: these tensors are not an MM-DiT in BFL names");
  int64_t D = img_in->second.size(0);
  auto opts = img_in->second.options();
  TensorMap src = bfl;
  int64_t nd = flux_count(bfl, "double_blocks."), ns = flux_count(bfl, "single_blocks.");
  // diffusers has no switches for these: absent parts become zeros (same function).
  for (int64_t i = 0; i < nd; ++i)
    for (const char* s : {"img", "txt"}) {
      auto n = "double_blocks." + std::to_string(i) + "." + s + "_attn.qkv.bias";
      if (!src.count(n)) src[n] = at::zeros({3 * D}, opts);
    }
  if (!src.count("vector_in.in_layer.weight")) {
    src["vector_in.in_layer.weight"] = at::zeros({D, pooled_dim_if_absent}, opts);
    src["vector_in.in_layer.bias"] = at::zeros({D}, opts);
    src["vector_in.out_layer.weight"] = at::zeros({D, D}, opts);
    src["vector_in.out_layer.bias"] = at::zeros({D}, opts);
  }
  TensorMap out;
  std::set<std::string> used;
  for (auto& rule : flux_rules(nd, ns)) {
    auto it = src.find(rule.bfl);
    if (it == src.end()) continue;
    used.insert(rule.bfl);
    auto t = rule.swap_halves ? swap_halves(it->second) : it->second;
    if (rule.hf.size() == 1) {
      out[rule.hf[0]] = t;
      continue;
    }
    std::vector<int64_t> sizes(rule.hf.size(), D);  // q, k, v are D rows each; proj_mlp takes the rest
    if (rule.hf.size() == 4) sizes[3] = t.size(0) - 3 * D;
    auto parts = t.split_with_sizes(sizes, 0);
    for (size_t j = 0; j < parts.size(); ++j) out[rule.hf[j]] = parts[j].contiguous();
  }
  std::vector<std::string> unknown;
  for (auto& [k, v] : src)
    if (!used.count(k)) unknown.push_back(k);
  if (!unknown.empty())
    fail("flux_to_diffusers: {} tensors have no diffusers name, e.g. '{}'", unknown.size(), unknown.front());
  return out;
}

}  // namespace iomm

// ---------------------------------------------------------------------------------------------------- FLUX AE

namespace iomm {

namespace {

// The AE's names are written once, as pairs of templates (BFL name, diffusers name) that one engine reads in
// either direction, so that the two directions cannot drift apart. A template is a name with {fields}:
//   {i}, {j}  an index, the same on both sides
//   {up}      a decoder level: BFL counts from the highest resolution, diffusers from the lowest, so level L is
//             N-1-L on the other side (the same formula both ways)
//   others    a name part spelled through its leaf table below
enum class Naming { kBfl, kDiffusers };

// One name part as BFL and diffusers spell it. `legacy` entries are diffusers' deprecated attention names: read
// from diffusers files (older saves still have them), never written.
struct Leaf {
  const char* bfl;
  const char* hf;
  bool legacy = false;
};

struct LeafTable {
  const char* field;
  std::vector<Leaf> leaves;
};

const std::vector<LeafTable>& vae_leaf_tables() {
  static const std::vector<LeafTable> tables = {
      {"wb", {{"weight", "weight"}, {"bias", "bias"}}},
      {"side", {{"encoder", "encoder"}, {"decoder", "decoder"}}},
      {"quant", {{"quant_conv", "quant_conv"}, {"post_quant_conv", "post_quant_conv"}}},
      {"io", {{"conv_in", "conv_in"}, {"conv_out", "conv_out"}}},
      {"res",
       {{"norm1", "norm1"}, {"conv1", "conv1"}, {"norm2", "norm2"}, {"conv2", "conv2"},
        {"nin_shortcut", "conv_shortcut"}}},
      {"mid", {{"block_1", "resnets.0"}, {"block_2", "resnets.1"}}},
      {"attn",
       {{"norm", "group_norm"}, {"q", "to_q"}, {"k", "to_k"}, {"v", "to_v"}, {"proj_out", "to_out.0"},
        {"q", "query", true}, {"k", "key", true}, {"v", "value", true}, {"proj_out", "proj_attn", true}}},
  };
  return tables;
}

// One tensor in both namings. `linear_1x1`: the weight is a 1x1 conv [C,C,1,1] in BFL, a Linear [C,C] in diffusers.
struct VaeRule {
  const char* bfl;
  const char* hf;
  bool linear_1x1 = false;
};

const VaeRule kVaeRules[] = {
    {"{quant}.{wb}", "{quant}.{wb}"},
    {"{side}.{io}.{wb}", "{side}.{io}.{wb}"},
    {"{side}.norm_out.{wb}", "{side}.conv_norm_out.{wb}"},
    {"encoder.down.{i}.block.{j}.{res}.{wb}", "encoder.down_blocks.{i}.resnets.{j}.{res}.{wb}"},
    {"encoder.down.{i}.downsample.conv.{wb}", "encoder.down_blocks.{i}.downsamplers.0.conv.{wb}"},
    {"decoder.up.{up}.block.{j}.{res}.{wb}", "decoder.up_blocks.{up}.resnets.{j}.{res}.{wb}"},
    {"decoder.up.{up}.upsample.conv.{wb}", "decoder.up_blocks.{up}.upsamplers.0.conv.{wb}"},
    {"{side}.mid.{mid}.{res}.{wb}", "{side}.mid_block.{mid}.{res}.{wb}"},
    {"{side}.mid.attn_1.{attn}.{wb}", "{side}.mid_block.attentions.0.{attn}.{wb}", /*linear_1x1=*/true},
};

const char* spelling(const Leaf& leaf, Naming n) { return n == Naming::kBfl ? leaf.bfl : leaf.hf; }

// The leaf table of `field`, or nullptr for the index fields.
const LeafTable* leaf_table(const std::string& field) {
  for (auto& t : vae_leaf_tables())
    if (field == t.field) return &t;
  return nullptr;
}

// A template cut into literal text and field names, in order (templates are the constants above: braces pair).
struct Piece {
  std::string text;
  bool field;
};

std::vector<Piece> template_pieces(const std::string& tmpl) {
  std::vector<Piece> out;
  size_t pos = 0;
  while (pos < tmpl.size()) {
    size_t open = tmpl.find('{', pos);
    if (open != pos) out.push_back({tmpl.substr(pos, open - pos), false});
    if (open == std::string::npos) break;
    size_t close = tmpl.find('}', open);
    out.push_back({tmpl.substr(open + 1, close - open - 1), true});
    pos = close + 1;
  }
  return out;
}

std::string escape_dots(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '.' ? std::string("\\.") : std::string(1, c);
  return out;
}

// What a field matches in one naming: a number, or any spelling of its table that this naming can hold.
std::string field_regex(const std::string& field, Naming naming) {
  const LeafTable* table = leaf_table(field);
  if (!table) return R"(\d+)";
  std::string alternatives;
  for (auto& leaf : table->leaves) {
    if (leaf.legacy && naming == Naming::kBfl) continue;  // a legacy entry repeats a BFL spelling
    if (!alternatives.empty()) alternatives += '|';
    alternatives += escape_dots(spelling(leaf, naming));
  }
  return alternatives;
}

// A template as a regex (one group per field, none inside) and its field names in group order.
struct Pattern {
  std::regex re;
  std::vector<std::string> fields;
};

Pattern compile_template(const std::string& tmpl, Naming naming) {
  std::string re;
  std::vector<std::string> fields;
  for (auto& piece : template_pieces(tmpl)) {
    if (!piece.field) {
      re += escape_dots(piece.text);
      continue;
    }
    re += "(" + field_regex(piece.text, naming) + ")";
    fields.push_back(piece.text);
  }
  return {std::regex(re), fields};
}

std::string render_template(const std::string& tmpl, const std::map<std::string, std::string>& values) {
  std::string out;
  for (auto& piece : template_pieces(tmpl)) out += piece.field ? values.at(piece.text) : piece.text;
  return out;
}

// A field's text in the other naming. `levels`: the number of decoder levels, for {up}.
std::string convert_field(const std::string& field, const std::string& text, Naming from, int64_t levels) {
  if (field == "up") return std::to_string(levels - 1 - std::stoll(text));
  const LeafTable* table = leaf_table(field);
  if (!table) return text;
  Naming to = from == Naming::kBfl ? Naming::kDiffusers : Naming::kBfl;
  for (auto& leaf : table->leaves) {
    if (leaf.legacy && to == Naming::kDiffusers) continue;  // read, never written
    if (text == spelling(leaf, from)) return spelling(leaf, to);
  }
  fail("vae names: '{}' is no {{{}}} spelling", text, field);  // unreachable: the regex matched a spelling
}

struct CompiledRule {
  const VaeRule* rule;
  Pattern bfl, hf;
};

const std::vector<CompiledRule>& compiled_vae_rules() {
  static const std::vector<CompiledRule> rules = [] {
    std::vector<CompiledRule> out;
    for (auto& r : kVaeRules)
      out.push_back({&r, compile_template(r.bfl, Naming::kBfl), compile_template(r.hf, Naming::kDiffusers)});
    return out;
  }();
  return rules;
}

// BFL's attention projections are 1x1 convs, diffusers' are Linear layers; other tensors keep their shape.
at::Tensor vae_tensor_for(const at::Tensor& v, Naming to, bool linear_1x1) {
  if (linear_1x1 && to == Naming::kDiffusers && v.dim() == 4) return v.reshape({v.size(0), v.size(1)});
  if (linear_1x1 && to == Naming::kBfl && v.dim() == 2) return v.reshape({v.size(0), v.size(1), 1, 1});
  return v;
}

// `tensors` in the other naming. The names no rule reads are left out and listed in `unknown`.
TensorMap convert_vae(const TensorMap& tensors, Naming from, std::vector<std::string>& unknown) {
  Naming to = from == Naming::kBfl ? Naming::kDiffusers : Naming::kBfl;
  // {up} needs the number of decoder levels; flux_count tolerates names with no index (they end up in `unknown`).
  int64_t levels = flux_count(tensors, from == Naming::kBfl ? "decoder.up." : "decoder.up_blocks.");
  TensorMap out;
  for (auto& [name, tensor] : tensors) {
    bool matched = false;
    for (auto& c : compiled_vae_rules()) {
      const Pattern& source = from == Naming::kBfl ? c.bfl : c.hf;
      std::smatch m;
      if (!std::regex_match(name, m, source.re)) continue;
      std::map<std::string, std::string> values;
      for (size_t f = 0; f < source.fields.size(); ++f)
        values[source.fields[f]] = convert_field(source.fields[f], m[f + 1].str(), from, levels);
      out[render_template(to == Naming::kBfl ? c.rule->bfl : c.rule->hf, values)] =
          vae_tensor_for(tensor, to, c.rule->linear_1x1);
      matched = true;
      break;
    }
    if (!matched) unknown.push_back(name);
  }
  return out;
}

}  // namespace

bool is_diffusers_vae(const TensorMap& m) {
  return any_prefix(m, "encoder.down_blocks.") || m.count("encoder.conv_norm_out.weight") > 0;
}

TensorMap vae_from_diffusers(const TensorMap& hf) {
  std::vector<std::string> unknown;
  TensorMap out = convert_vae(hf, Naming::kDiffusers, unknown);
  for (auto& name : unknown) out[name] = hf.at(name);  // kept, so that load_weights reports them
  return out;
}

TensorMap vae_to_diffusers(const TensorMap& bfl) {
  std::vector<std::string> unknown;
  TensorMap out = convert_vae(bfl, Naming::kBfl, unknown);
  if (!unknown.empty())
    fail("vae_to_diffusers: {} tensors have no diffusers AutoencoderKL name, e.g. '{}'", unknown.size(),
         unknown.front());
  return out;
}

}  // namespace iomm

// ---------------------------------------------------------------------------------------------------- Z-Image

namespace iomm {

static std::string zimage_strip(const std::string& k) {
  const std::string pre = "model.diffusion_model.";
  return k.rfind(pre, 0) == 0 ? k.substr(pre.size()) : k;
}

bool is_original_zimage(const TensorMap& checkpoint) {
  for (auto& [k, v] : checkpoint) {
    auto s = zimage_strip(k);
    if (s.find(".attention.qkv.weight") != std::string::npos || s.rfind("x_embedder.", 0) == 0 ||
        s.rfind("final_layer.", 0) == 0)
      return true;
  }
  return false;
}

TensorMap zimage_from_original(const TensorMap& original) {
  static const std::pair<const char*, const char*> kRename[] = {
      {"final_layer.", "all_final_layer.2-1."},
      {"x_embedder.", "all_x_embedder.2-1."},
      {".attention.out.bias", ".attention.to_out.0.bias"},
      {".attention.k_norm.weight", ".attention.norm_k.weight"},
      {".attention.q_norm.weight", ".attention.norm_q.weight"},
      {".attention.out.weight", ".attention.to_out.0.weight"},
  };
  TensorMap out;
  for (auto& [key, t] : original) {
    std::string k = zimage_strip(key);
    if (k == "norm_final.weight") continue;
    for (auto& [from, to] : kRename) {
      std::string f(from);
      // Whole-prefix renames apply only at the start (diffusers' str.replace would also hit "all_final_layer.").
      if (f[0] != '.') {
        if (k.rfind(f, 0) == 0) k = to + k.substr(f.size());
      } else if (auto pos = k.find(f); pos != std::string::npos) {
        k = k.substr(0, pos) + to + k.substr(pos + f.size());
      }
    }
    auto pos = k.find(".attention.qkv.weight");
    if (pos != std::string::npos) {
      if (t.size(0) % 3) fail("zimage_from_original: '{}' has {} rows, not a multiple of 3 (fused q, k, v)", key,
                              t.size(0));
      auto parts = t.chunk(3, 0);
      const char* names[] = {".attention.to_q.weight", ".attention.to_k.weight", ".attention.to_v.weight"};
      for (int j = 0; j < 3; ++j) out[k.substr(0, pos) + names[j]] = parts[j].contiguous();
      continue;
    }
    out[k] = t;
  }
  return out;
}

}  // namespace iomm
