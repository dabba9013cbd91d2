// The frozen MLLM's identity: model.mllm is a path to someone else's checkpoint, so swapping the files behind it
// (another InternVL, a re-download, an edited config) would silently change what the adapter was trained against.
// Training records the identity in every checkpoint (state.json "frozen") and in the exported model (mllm.json);
// --resume and a stage-2 init from a stage-1 model refuse an MLLM that differs, naming the path and the files.
//
// Identity: the path as given, and the SHA-256 of every file model_fingerprint counts for an MLLM (*.safetensors,
// *.json, merges.txt in its directory), hashed in full once at the start of a run: about 0.6 s per GB from the
// page cache (OpenSSL's SHA-256 runs at 1.8 GB/s on this machine kind), plus the read from disk.
#pragma once
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace iomm {

// The exported model's record of its MLLM (RUN/model/mllm.json).
inline constexpr const char* kMllmRecord = "mllm.json";

// {"path": dir, "fingerprint": "sha256:...", "files": {name: sha256}}.
nlohmann::json mllm_identity(const std::string& mllm_dir);

// "" when `now` has the same files with the same contents as `recorded`; else what changed, e.g.
// "model.safetensors differs (sha256 1f3a... then, 9c0d... now); config.json is new". Paths may differ (a moved
// directory is the same MLLM).
std::string mllm_changes(const nlohmann::json& recorded, const nlohmann::json& now);

// Fails when the MLLM at `now` is not the one `recorded` describes: names `what` (the checkpoint or stage-1 model
// that recorded it), both paths, the files that changed, and the fix.
void check_same_mllm(const nlohmann::json& recorded, const nlohmann::json& now, const std::string& what);

}  // namespace iomm
