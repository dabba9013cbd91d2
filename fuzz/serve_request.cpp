// The requests of `iomm serve`: the JSON body of POST /v1/images/generations, or (first byte odd) the multipart text
// fields of /v1/images/edits as "name=value" lines; a refusal is answered with error_body(), as the server does.
#include "apps/serve_request.h"
#include "fuzz_util.h"

using namespace iomm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

namespace {

std::map<std::string, std::string> fields_of(std::string_view text) {
  std::map<std::string, std::string> fields;
  for (auto line : fuzz::split(text, "\n", 64)) {
    const auto kv = fuzz::split(line, "=", 2);
    fields[std::string(kv[0])] = kv.size() > 1 ? std::string(kv[1]) : "";
  }
  return fields;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ServeLimits limits;
  const ServedModel model{"iomm-tiny", 32};
  const std::string_view rest = fuzz::as_text(data + 1, size - 1);
  try {
    const ImageRequest r = (data[0] & 1) ? parse_edit_fields(fields_of(rest), limits, model)
                                         : parse_generation_request(std::string(rest), limits, model);
    if (r.n < 1 || r.n > limits.max_n || r.steps < 1 || r.steps > limits.max_steps) __builtin_trap();
    (void)utf8_length(r.prompt);
  } catch (const RequestError& e) {
    (void)error_body(e.what(), "invalid_request_error", e.param);
  }
  return 0;
}
