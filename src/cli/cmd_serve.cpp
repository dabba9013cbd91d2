// `iomm serve`: the HTTP API and web page over a trained model (apps/serve.h, docs/serve.md).
#include "apps/serve.h"
#include "cli/command.h"

namespace {

iomm::cli::Register serve_reg{{"serve", "HTTP API (OpenAI-style image generations and edits, progress events) and "
                                        "a web page for a trained model",
  [](CLI::App& app) {
    auto o = std::make_shared<iomm::ServeOptions>();
    auto& l = o->limits;
    app.add_option("--model", o->model, "model directory (RUN/model) or the training run directory")->required();
    app.add_option("--host", o->host, "address to listen on (0.0.0.0 exposes it to the network)")
        ->capture_default_str();
    app.add_option("--port", o->port, "port (0: any free port; the address is printed)")
        ->check(CLI::Range(0, 65535))
        ->capture_default_str();
    app.add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' on every API request");
    app.add_option("--queue", l.queue, "jobs that may wait behind the running one (more get 429)")
        ->check(CLI::Range(1, 10000))
        ->capture_default_str();
    app.add_option("--max-n", l.max_n, "images per request")->check(CLI::Range(1, 64))->capture_default_str();
    app.add_option("--max-steps", l.max_steps, "sampling steps per image")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    app.add_option("--max-prompt-chars", l.max_prompt_chars, "prompt length in characters")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    app.add_option("--max-upload-bytes", l.max_upload_bytes, "size of an edit's image file")
        ->check(CLI::Range(1, 1 << 30))
        ->capture_default_str();
    app.add_option("--device", o->device, "cpu, cuda, cuda:1 (default: as trained)");
    app.add_option("--dtype", o->dtype, "float32 | bfloat16 (default: as trained)");
    return [o]() -> int { return iomm::serve(*o); };
  }}};

}  // namespace
