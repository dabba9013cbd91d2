#include "apps/serve.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "apps/generation_record.h"
#include "apps/job_queue.h"
#include "apps/web_assets.h"
#include "core/error.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "model/model_dir.h"
#include "model/model_fingerprint.h"

namespace iomm {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using httplib::Request;
using httplib::Response;

constexpr int kPreviewSide = 64;  // progress previews are at most this wide: small events, enough to watch
constexpr int kExtraHttpThreads = 16;  // beyond queue + 1 waiting clients: 429s, health, streams, the page

// What the handlers share: the options, the model (used by the worker thread only) and the queue.
struct Context {
  ServeOptions opts;
  std::string model_dir;
  IommModel model;
  ServedModel served;
  std::string fingerprint;
  JobQueue queue;
  std::mutex decode_mu;  // one upload decoded at a time: a small PNG can hold a huge image

  explicit Context(const ServeOptions& o)
      : opts(o), model_dir(resolve_model_dir(o.model)), model(IommModel::load(model_dir, o.device, o.dtype)),
        fingerprint(model_fingerprint(model_dir)), queue(o.limits.queue) {
    auto p = fs::path(model_dir).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    served.id = p.filename() == "model" && p.has_parent_path() ? p.parent_path().filename().string()
                                                                : p.filename().string();
    served.resolution = model.config().resolution;
  }
};

void send_json(Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(Response& res, int status, const std::string& message, const std::string& type,
                const std::string& param = "") {
  res.status = status;
  res.set_content(error_body(message, type, param), "application/json");
}

// Every handler's exceptions become answers: a request never takes the server down.
httplib::Server::Handler guarded(std::function<void(const Request&, Response&)> f) {
  return [f = std::move(f)](const Request& req, Response& res) {
    try {
      f(req, res);
    } catch (const RequestError& e) {
      send_error(res, e.status, e.what(), "invalid_request_error", e.param);
    } catch (const std::exception& e) {
      spdlog::error("{} {}: {}", req.method, req.path, e.what());
      send_error(res, 500, std::string("internal error: ") + e.what(), "server_error");
    }
  };
}

// ---------------------------------------------------------------- the worker's side

std::string preview_data_url(IommModel& model, const at::Tensor& denoised) {
  Image img = tensor_to_image(model.decode_preview(denoised)[0]);
  if (img.width > kPreviewSide)
    img = resize(img, kPreviewSide, kPreviewSide * img.height / img.width, Resample::Bilinear);
  auto png = encode_png(img);
  return "data:image/png;base64," + base64_encode(png.data(), png.size());
}

GenerationRecord record_for(const ImageRequest& r, int64_t i, const std::string& fingerprint) {
  GenerationRecord g;
  g.task = r.task;
  g.prompt = r.prompt;
  g.seed = r.seed + uint64_t(i);  // image i as `iomm generate --seed SEED+i`
  g.steps = r.steps;
  g.cfg_scale = r.cfg_scale;
  g.sampler = r.sampler;
  g.shift = r.shift;
  g.model_fingerprint = fingerprint;
  return g;
}

// The job's work: the images one by one (each exactly what the CLI makes for its seed), progress after every step.
void run_images(Job& job, Context& c, const ImageRequest& req, const at::Tensor& reference) {
  json data = json::array();
  for (int64_t i = 0; i < req.n; ++i) {
    job.throw_if_cancelled();
    GenerationRecord r = record_for(req, i, c.fingerprint);
    auto on_step = [&](int64_t step, int64_t steps, double sigma, double, const at::Tensor&, const at::Tensor& x0) {
      job.throw_if_cancelled();  // a cancelled running job stops here
      json ev = {{"id", job.id()}, {"image", i}, {"n", req.n}, {"step", step + 1}, {"steps", steps}, {"sigma", sigma}};
      if (req.preview) ev["preview"] = preview_data_url(c.model, x0);
      job.emit("progress", ev.dump());
    };
    auto png = encode_generated_png(generate_image(c.model, r, reference, on_step), r);
    json item = {{"b64_json", base64_encode(png.data(), png.size())}, {"seed", r.seed}, {"parameters", to_json(r)}};
    job.emit("image", json{{"id", job.id()}, {"index", i}, {"n", req.n}, {"b64_json", item["b64_json"]},
                           {"seed", r.seed}, {"parameters", item["parameters"]}}.dump());
    data.push_back(std::move(item));
  }
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  job.set_result(200, json{{"id", job.id()}, {"created", now.count()}, {"model", c.served.id}, {"data", data}}.dump());
}

// ---------------------------------------------------------------- the handlers' side

// Server-sent events of a job from its first event on; ends after the last ("done", "error" or "cancelled").
void stream_events(const std::shared_ptr<Job>& job, Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto provider = [job, next = size_t(0)](size_t, httplib::DataSink& sink) mutable {
    bool ended = false;
    auto events = job->events_since(next, std::chrono::seconds(10), &ended);
    if (events.empty() && !ended) {  // a comment every 10 s: a closed connection is noticed, proxies stay open
      static const std::string keep_alive = ": keep-alive\n\n";
      return sink.write(keep_alive.data(), keep_alive.size());
    }
    for (const auto& e : events) {
      std::string s = fmt::format("id: {}\nevent: {}\ndata: {}\n\n", next++, e.name, e.data);
      if (!sink.write(s.data(), s.size())) return false;
    }
    if (ended) sink.done();
    return true;
  };
  res.set_chunked_content_provider("text/event-stream", provider);
}

void submit(Context& c, ImageRequest req, const at::Tensor& reference, Response& res) {
  if (!req.seed_given) {  // drawn here and reported in every image's parameters, so the result can be redone
    static std::mutex mu;
    static std::mt19937_64 rng{std::random_device{}()};
    std::lock_guard lock(mu);
    req.seed = rng() >> 1;
  }
  auto job = std::make_shared<Job>(new_job_id(), [&c, req, reference](Job& j) { run_images(j, c, req, reference); });
  switch (c.queue.submit(job)) {
    case SubmitResult::full:
      res.set_header("Retry-After", "1");
      return send_error(res, 429,
                        fmt::format("the queue is full ({} jobs waiting, the server's --queue); retry later",
                                    c.queue.capacity()),
                        "queue_full");
    case SubmitResult::closed:
      return send_error(res, 503, "the server is shutting down; retry later", "unavailable");
    case SubmitResult::accepted: break;
  }
  res.set_header("X-Job-Id", job->id());
  if (req.stream) return stream_events(job, res);
  job->wait();
  res.status = job->status();
  res.set_content(job->body(), "application/json");
}

void handle_generation(Context& c, const Request& req, Response& res) {
  if (req.is_multipart_form_data())
    throw RequestError(400, "POST /v1/images/generations takes a JSON body (Content-Type: application/json); "
                            "multipart is for /v1/images/edits");
  submit(c, parse_generation_request(req.body, c.opts.limits, c.served), {}, res);
}

// The multipart parts: text fields by name, the image file checked (one, within the size limit, decodable).
at::Tensor edit_reference(Context& c, const Request& req, std::map<std::string, std::string>* fields) {
  const httplib::MultipartFormData* image = nullptr;
  for (const auto& [name, part] : req.files) {
    if (fields->count(name) || (name == "image" && image))
      throw RequestError(400, name + ": given more than once; send each field once", name);
    if (name == "image") image = &part;
    else (*fields)[name] = part.content;
  }
  if (!image) throw RequestError(400, "image: missing; upload the reference image as the file field 'image'", "image");
  if (image->content.size() > c.opts.limits.max_upload_bytes)
    throw RequestError(413, fmt::format("image: {} bytes, over the limit of {} (the server's --max-upload-bytes); "
                                        "send a smaller image", image->content.size(), c.opts.limits.max_upload_bytes),
                       "image");
  std::lock_guard lock(c.decode_mu);
  try {
    auto name = "the uploaded file" + (image->filename.empty() ? std::string() : " '" + image->filename + "'");
    auto img = decode_image_bytes(reinterpret_cast<const uint8_t*>(image->content.data()), image->content.size(), name);
    return reference_tensor(img, c.served.resolution);
  } catch (const Error& e) {
    throw RequestError(400, std::string("image: ") + e.what(), "image");
  }
}

void handle_edit(Context& c, const Request& req, Response& res) {
  if (!req.is_multipart_form_data())
    throw RequestError(400, "POST /v1/images/edits takes multipart/form-data: the file field 'image' and the text "
                            "field 'prompt' (curl -F image=@in.png -F prompt=...)");
  std::map<std::string, std::string> fields;
  auto reference = edit_reference(c, req, &fields);
  submit(c, parse_edit_fields(fields, c.opts.limits, c.served), reference, res);
}

std::shared_ptr<Job> find_job(Context& c, const Request& req) {
  auto job = c.queue.find(req.matches[1]);
  if (!job)
    throw RequestError(404, fmt::format("no job '{}' (unknown, or ended long enough ago to be forgotten)",
                                        req.matches[1].str()));
  return job;
}

void handle_cancel(Context& c, const Request& req, Response& res) {
  std::string id = req.matches[1];
  switch (c.queue.cancel(id)) {
    case CancelResult::not_found: throw RequestError(404, fmt::format("no job '{}'", id));
    case CancelResult::already_ended: {
      auto job = c.queue.find(id);  // may have been forgotten since
      throw RequestError(409, fmt::format("job '{}' has already ended ({})", id,
                                          job ? to_string(job->state()) : "forgotten"));
    }
    case CancelResult::cancelled: return send_json(res, 200, {{"id", id}, {"state", "cancelled"}});
    case CancelResult::cancelling: return send_json(res, 202, {{"id", id}, {"state", "cancelling"}});
  }
}

json job_status(const Job& job) {
  json j = {{"id", job.id()}, {"state", to_string(job.state())}};
  if (job.ended()) j["result"] = json::parse(job.body(), nullptr, false);
  return j;
}

json model_list(const Context& c) {
  const auto& l = c.opts.limits;
  json m = {{"id", c.served.id}, {"object", "model"}, {"created", 0}, {"owned_by", "iomm"},
            {"fingerprint", c.fingerprint}, {"resolution", c.served.resolution},
            {"defaults", {{"steps", 20}, {"cfg_scale", 4.5}, {"sampler", "euler"}, {"shift", 1.0}}},
            {"samplers", {"euler", "dpmpp_2m"}},
            {"limits", {{"max_n", l.max_n}, {"max_steps", l.max_steps}, {"max_prompt_chars", l.max_prompt_chars},
                        {"max_upload_bytes", l.max_upload_bytes}, {"queue", l.queue}}}};
  return {{"object", "list"}, {"data", {m}}};
}

const char* content_type(const std::string& path) {
  auto ext = fs::path(path).extension().string();
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  return "text/html; charset=utf-8";
}

bool is_page(const std::string& path) { return path == "/" || find_web_asset(path) != nullptr; }

// Constant-time comparison: the key does not leak through response timing (its length may).
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

void add_routes(httplib::Server& svr, Context& c) {
  svr.Get("/", [](const Request&, Response& res) {
    auto* a = find_web_asset("/index.html");
    res.set_content(reinterpret_cast<const char*>(a->data), a->size, content_type(a->path));
  });
  svr.Get(R"(/[A-Za-z0-9_.-]+\.(html|js|css))", [](const Request& req, Response& res) {
    auto* a = find_web_asset(req.path);
    if (!a) return send_error(res, 404, "no such file: " + req.path, "not_found");
    res.set_content(reinterpret_cast<const char*>(a->data), a->size, content_type(a->path));
  });
  svr.Get("/health", guarded([&c](const Request&, Response& res) {
    send_json(res, 200, {{"status", "ok"}, {"model", c.served.id}, {"fingerprint", c.fingerprint},
                         {"queue", {{"waiting", c.queue.waiting()}, {"capacity", c.queue.capacity()},
                                    {"running", c.queue.busy()}}}});
  }));
  svr.Get("/v1/models", guarded([&c](const Request&, Response& res) { send_json(res, 200, model_list(c)); }));
  svr.Post("/v1/images/generations", guarded([&c](const Request& q, Response& r) { handle_generation(c, q, r); }));
  svr.Post("/v1/images/edits", guarded([&c](const Request& q, Response& r) { handle_edit(c, q, r); }));
  svr.Get(R"(/v1/jobs/([A-Za-z0-9-]+))",
          guarded([&c](const Request& q, Response& r) { send_json(r, 200, job_status(*find_job(c, q))); }));
  svr.Get(R"(/v1/jobs/([A-Za-z0-9-]+)/events)",
          guarded([&c](const Request& q, Response& r) { stream_events(find_job(c, q), r); }));
  svr.Delete(R"(/v1/jobs/([A-Za-z0-9-]+))", guarded([&c](const Request& q, Response& r) { handle_cancel(c, q, r); }));
}

void add_policies(httplib::Server& svr, Context& c) {
  svr.set_pre_routing_handler([&c](const Request& req, Response& res) {
    if (c.opts.api_key.empty() || (req.method == "GET" && is_page(req.path)))
      return httplib::Server::HandlerResponse::Unhandled;  // the page itself holds no data; its API calls need the key
    auto auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) == 0 && same_secret(auth.substr(7), c.opts.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' with the server's "
                         "--api-key", "authentication_error");
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib's own refusals (no route, body over the payload limit) get a message too.
  svr.set_error_handler([&c](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413)
      send_error(res, 413, fmt::format("the request body is over {} bytes (the server's --max-upload-bytes plus "
                                       "1 MiB for the form); send a smaller image", c.opts.limits.max_upload_bytes),
                 "invalid_request_error");
    else if (res.status == 404)
      send_error(res, 404,
                 fmt::format("no endpoint {} {}; the API is in docs/serve.md (GET /v1/models, POST "
                             "/v1/images/generations, POST /v1/images/edits, /v1/jobs/ID)",
                             req.method, req.path),
                 "not_found");
    else
      send_error(res, res.status, fmt::format("HTTP {} for {} {}", res.status, req.method, req.path),
                 "invalid_request_error");
  });
  svr.set_logger([](const Request& req, const Response& res) {
    spdlog::info("{} {} -> {}", req.method, req.path, res.status);
  });
  svr.set_payload_max_length(c.opts.limits.max_upload_bytes + (1u << 20));
  svr.set_keep_alive_timeout(2);  // idle browser connections do not hold up a shutdown for long
  size_t threads = c.opts.limits.queue + 1 + kExtraHttpThreads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
}

int bind(httplib::Server& svr, const ServeOptions& o) {
  if (o.port == 0) {
    int port = svr.bind_to_any_port(o.host);
    if (port <= 0) fail("serve: cannot bind to {} (--host): not an address of this machine?", o.host);
    return port;
  }
  if (!svr.bind_to_port(o.host, o.port))
    fail("serve: cannot bind to {}:{} (in use, or not an address of this machine); choose another --port, or "
         "--port 0 for any free one", o.host, o.port);
  return o.port;
}

}  // namespace

int serve(const ServeOptions& o) {
  // SIGTERM / SIGINT go to one thread (below) that shuts down in order; blocked before any other thread exists.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Context c(o);
  httplib::Server svr;
  add_routes(svr, c);
  add_policies(svr, c);
  int port = bind(svr, o);
  spdlog::info("serve: model '{}' ({}), queue {}, {}", c.served.id, c.fingerprint, o.limits.queue,
               o.api_key.empty() ? "no API key" : "API key required");
  std::printf("iomm serve: listening on http://%s:%d\n", o.host.c_str(), port);
  std::fflush(stdout);

  std::atomic<bool> listen_ended{false};
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (listen_ended) return;  // woken by the main thread below
    spdlog::info("serve: {}: cancelling the jobs, then stopping", strsignal(sig));
    c.queue.shutdown();
    while (!svr.is_running() && !listen_ended) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    svr.stop();
  });
  bool ok = svr.listen_after_bind();
  listen_ended = true;
  pthread_kill(signals.native_handle(), SIGTERM);  // ends its sigwait when no signal came
  signals.join();
  c.queue.shutdown();
  if (!ok) fail("serve: the server stopped listening on {}:{} unexpectedly", o.host, port);
  spdlog::info("serve: stopped");
  return 0;
}

}  // namespace iomm
