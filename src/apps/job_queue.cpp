#include "apps/job_queue.h"

#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace iomm {

const char* to_string(JobState s) {
  switch (s) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::done: return "done";
    case JobState::failed: return "failed";
    case JobState::cancelled: return "cancelled";
  }
  return "?";
}

std::string new_job_id() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu);
  return fmt::format("job-{:016x}", rng());
}

// ---------------------------------------------------------------- Job

Job::Job(std::string id, Work work) : id_(std::move(id)), work_(std::move(work)) {}

JobState Job::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

bool Job::ended() const {
  auto s = state();
  return s == JobState::done || s == JobState::failed || s == JobState::cancelled;
}

void Job::throw_if_cancelled() const {
  if (cancel_requested()) throw JobCancelled();
}

void Job::emit(std::string name, std::string data) {
  {
    std::lock_guard lock(mu_);
    events_.push_back({std::move(name), std::move(data)});
  }
  cv_.notify_all();
}

void Job::set_result(int status, std::string body) {
  std::lock_guard lock(mu_);
  status_ = status;
  body_ = std::move(body);
}

std::vector<JobEvent> Job::events_since(size_t from, std::chrono::milliseconds wait, bool* ended) const {
  std::unique_lock lock(mu_);
  auto is_end = [this] {
    return state_ == JobState::done || state_ == JobState::failed || state_ == JobState::cancelled;
  };
  cv_.wait_for(lock, wait, [&] { return events_.size() > from || is_end(); });
  *ended = is_end();
  if (from >= events_.size()) return {};
  return {events_.begin() + std::ptrdiff_t(from), events_.end()};
}

void Job::wait() const {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] {
    return state_ == JobState::done || state_ == JobState::failed || state_ == JobState::cancelled;
  });
}

int Job::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

std::string Job::body() const {
  std::lock_guard lock(mu_);
  return body_;
}

void Job::start() {
  std::lock_guard lock(mu_);
  state_ = JobState::running;
}

void Job::finish(JobState s, int status, const std::string& message) {
  {
    std::lock_guard lock(mu_);
    if (s != JobState::done || status_ == 0) {
      // An error answer in the OpenAI form; the same JSON is the stream's last event.
      const char* type = s == JobState::cancelled ? "cancelled" : "server_error";
      std::string reason = s == JobState::cancelled && !cancel_reason_.empty() ? cancel_reason_ : message;
      status_ = s == JobState::cancelled ? cancel_status_ : s == JobState::done ? 500 : status;
      body_ = nlohmann::json{{"error", {{"message", reason}, {"type", type}, {"job", id_}}}}.dump();
      events_.push_back({s == JobState::cancelled ? "cancelled" : "error", body_});
    } else {
      events_.push_back({"done", body_});
    }
    state_ = s;
    work_ = nullptr;  // drops what the work captured (request, reference image) as soon as the job ends
  }
  cv_.notify_all();
}

void Job::request_cancel(int status, std::string reason) {
  {
    std::lock_guard lock(mu_);
    if (!cancel_.load()) {
      cancel_status_ = status;
      cancel_reason_ = std::move(reason);
    }
  }
  cancel_.store(true);
}

// ---------------------------------------------------------------- JobQueue

JobQueue::JobQueue(size_t capacity, size_t keep_ended)
    : capacity_(capacity), keep_ended_(keep_ended), worker_([this] { worker_loop(); }) {}

JobQueue::~JobQueue() { shutdown(); }

SubmitResult JobQueue::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return SubmitResult::closed;
    if (waiting_.size() >= capacity_) return SubmitResult::full;
    // Before the worker can see the job: emitted after, "queued" could follow "started" (seen under load).
    // Queue lock, then job lock: the same order as cancel().
    job->emit("queued", nlohmann::json{{"id", job->id()}}.dump());
    waiting_.push_back(job);
    jobs_[job->id()] = job;
  }
  cv_.notify_all();
  return SubmitResult::accepted;
}

std::shared_ptr<Job> JobQueue::find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

CancelResult JobQueue::cancel(const std::string& id) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return CancelResult::not_found;
    job = it->second;
    if (job->ended()) return CancelResult::already_ended;
    for (auto w = waiting_.begin(); w != waiting_.end(); ++w)
      if (*w == job) {
        waiting_.erase(w);
        job->request_cancel(409, "job " + id + " was cancelled (DELETE /v1/jobs/" + id + ") before it started");
        job->finish(JobState::cancelled, 409, "");
        remember(job);
        return CancelResult::cancelled;
      }
  }
  job->request_cancel(409, "job " + id + " was cancelled (DELETE /v1/jobs/" + id + ") while running");
  return CancelResult::cancelling;
}

size_t JobQueue::waiting() const {
  std::lock_guard lock(mu_);
  return waiting_.size();
}

bool JobQueue::busy() const {
  std::lock_guard lock(mu_);
  return running_ != nullptr;
}

void JobQueue::shutdown() {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mu_);
    if (closed_ && !worker_.joinable()) return;
    closed_ = true;
    dropped.swap(waiting_);
    if (running_) running_->request_cancel(503, "the server is shutting down; the job was stopped, retry later");
  }
  for (auto& job : dropped) {
    job->request_cancel(503, "the server is shutting down; the job never started, retry later");
    job->finish(JobState::cancelled, 503, "");
  }
  cv_.notify_all();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

void JobQueue::remember(const std::shared_ptr<Job>& job) {
  ended_order_.push_back(job->id());
  while (ended_order_.size() > keep_ended_) {
    jobs_.erase(ended_order_.front());
    ended_order_.pop_front();
  }
}

void JobQueue::worker_loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return closed_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // closed and drained
      job = waiting_.front();
      waiting_.pop_front();
      running_ = job;
    }
    job->start();
    job->emit("started", nlohmann::json{{"id", job->id()}}.dump());
    try {
      job->throw_if_cancelled();
      job->work_(*job);
      job->finish(JobState::done, 200, "");
    } catch (const JobCancelled&) {
      job->finish(JobState::cancelled, 409, "");
    } catch (const std::exception& e) {
      spdlog::error("job {} failed: {}", job->id(), e.what());
      job->finish(JobState::failed, 500, std::string("generation failed: ") + e.what());
    }
    std::lock_guard lock(mu_);
    running_ = nullptr;
    remember(job);
  }
}

}  // namespace iomm
