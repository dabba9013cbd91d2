// `iomm serve`: an HTTP API (OpenAI-style image generations and edits, server-sent progress events, job cancel)
// and the web page, over one loaded model. One worker thread runs the model; a bounded queue (apps/job_queue.h)
// sits in front of it; requests are checked before they are queued (apps/serve_request.h). API: docs/serve.md.
#pragma once
#include <string>

#include "apps/serve_request.h"

namespace iomm {

struct ServeOptions {
  std::string model;               // RUN/model or RUN
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8080;                 // 0: any free port (the bound address is printed)
  std::string api_key;             // non-empty: every API request needs "Authorization: Bearer KEY"
  std::string device, dtype;       // empty: as trained
  ServeLimits limits;
};

// Loads the model, prints "iomm serve: listening on http://HOST:PORT" on stdout and serves until SIGTERM or
// SIGINT, which stop the waiting and running jobs (their clients get 503) and end the process cleanly: returns 0.
int serve(const ServeOptions& o);

}  // namespace iomm
