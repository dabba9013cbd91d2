// A model's fingerprint: which weights made an image. Written into every PNG iomm writes and reported by `iomm serve`,
// so a result can be traced to (and checked against) the exact model that produced it.
//
// Definition: "sha256:" + the hex SHA-256 of a manifest, one line "<sha256 of the file>  <name>\n" per file, sorted by
// name (the format of `sha256sum`). The files are everything that decides the output:
//   - in the model directory (recursively): iomm.toml and every *.safetensors / *.json, named relative to it;
//   - in the frozen MLLM's directory (model.mllm): *.safetensors, *.json, vocab.json / merges.txt, named "mllm/<file>";
//   - a VAE file (model.autoencoder, when not "identity"): named "autoencoder/<file name>".
// Moving or copying a run directory (with its MLLM) keeps the fingerprint; retraining or editing a weight changes it.
#pragma once
#include <string>

namespace iomm {

std::string model_fingerprint(const std::string& model_dir);

// The hex SHA-256 of a file (streamed: memory does not grow with the file).
std::string sha256_file(const std::string& path);
// The hex SHA-256 of bytes.
std::string sha256_hex(const std::string& bytes);

}  // namespace iomm
