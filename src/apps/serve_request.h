// The requests of `iomm serve`, parsed and checked before anything is queued: every bad request is answered with a
// 4xx whose message names the field and the fix. JSON bodies (generations) and multipart text fields (edits) go
// through the same checks. Torch-free and HTTP-free, unit-tested alone.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace iomm {

// Configurable with `iomm serve` flags (docs/serve.md).
struct ServeLimits {
  int64_t max_n = 4;                    // --max-n: images per request
  int64_t max_steps = 100;              // --max-steps
  int64_t max_prompt_chars = 1000;      // --max-prompt-chars (Unicode characters)
  size_t max_upload_bytes = 8u << 20;   // --max-upload-bytes: an edit's image file
  size_t queue = 8;                     // --queue: jobs that may wait behind the running one
};

// A request the server refuses: HTTP status, the message (what is wrong and how to fix it), the field if any.
struct RequestError : std::runtime_error {
  int status;
  std::string param;
  RequestError(int status, const std::string& message, std::string param = "")
      : std::runtime_error(message), status(status), param(std::move(param)) {}
};

// What the model offers to requests: its id ("model" must match when given) and image side ("size" likewise).
struct ServedModel {
  std::string id;
  int64_t resolution = 32;
};

struct ImageRequest {
  std::string task = "generate";  // generate | edit
  std::string prompt;             // the caption, or the edit's instruction
  int64_t n = 1;                  // image i uses seed + i
  uint64_t seed = 0;
  bool seed_given = false;        // false: the server draws one and reports it
  int64_t steps = 20;             // the defaults are `iomm generate`'s
  double cfg_scale = 4.5;
  std::string sampler = "euler";
  double shift = 1.0;
  bool stream = false;            // answer with server-sent events instead of one JSON
  bool preview = false;           // progress events carry a low-resolution preview PNG
};

// POST /v1/images/generations: the JSON body.
ImageRequest parse_generation_request(const std::string& body, const ServeLimits& limits, const ServedModel& model);
// POST /v1/images/edits: the multipart text fields (the file field "image" is checked by the server).
ImageRequest parse_edit_fields(const std::map<std::string, std::string>& fields, const ServeLimits& limits,
                               const ServedModel& model);

// The error body in the OpenAI form: {"error": {"message", "type", "param"}}.
std::string error_body(const std::string& message, const std::string& type, const std::string& param = "");

// Standard base64 (RFC 4648, with padding): the b64_json of the answers.
std::string base64_encode(const uint8_t* data, size_t size);

// Number of Unicode characters of UTF-8 text; -1 when it is not valid UTF-8.
int64_t utf8_length(const std::string& s);

}  // namespace iomm
