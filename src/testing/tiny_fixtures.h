// Shared fixtures of the unit tests (compiled into iomm_tests only): a byte-level tokenizer with InternVL3's
// special tokens, a random tiny InternVL checkpoint directory, and a small shapes corpus.
#pragma once
#include <cstdint>
#include <string>

namespace iomm::fixtures {

inline constexpr int kByteTokenizerImgContext = 261;  // <IMG_CONTEXT>
inline constexpr int kByteTokenizerPad = 256;         // <|endoftext|>

// A fresh temporary directory (mkdtemp under the test temp dir).
std::string temp_dir(const std::string& name);
// tokenizer.json: 256 byte tokens, no merges, then <|endoftext|> <|im_start|> <|im_end|> <img> </img> <IMG_CONTEXT>.
std::string byte_tokenizer_json();
// A random tiny InternVL (16 px tiles of 4 px patches -> 4 image tokens; LLM width 32) saved in the original
// layout with the byte tokenizer beside it: load_internvl(dir) and Tokenizer::load(dir) read it. Cached per process.
std::string tiny_mllm_dir();
// `iomm world make` output with 64 image-only and 64 captioned 32 px images. Cached per process.
std::string tiny_corpus_dir();
// A random FLUX-architecture autoencoder (two levels: /2, 16 latent channels, scale 0.7, shift -0.2) saved as
// config.json + BFL names in a fresh directory; `perturb` moves one encoder weight (another fingerprint).
std::string tiny_flux_ae_dir(uint64_t seed, double perturb = 0);

}  // namespace iomm::fixtures
