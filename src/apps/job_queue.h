// The jobs of `iomm serve`: a bounded queue in front of one worker thread (the model is used by one job at a
// time), job ids, cancellation and per-job event logs for server-sent events. Torch-free and HTTP-free, so the
// rules (bounded, cancel queued at once, cancel running at the next check, shutdown) are unit-tested alone.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace iomm {

enum class JobState { queued, running, done, failed, cancelled };
const char* to_string(JobState s);

// One server-sent event: its name ("progress", "image", "done", ...) and its JSON data.
struct JobEvent {
  std::string name;
  std::string data;
};

// Thrown by a job's work when it sees cancel_requested() (the step callback); the queue marks the job cancelled.
struct JobCancelled : std::runtime_error {
  JobCancelled() : std::runtime_error("cancelled") {}
};

class Job {
 public:
  using Work = std::function<void(Job&)>;
  Job(std::string id, Work work);

  const std::string& id() const { return id_; }
  JobState state() const;
  bool ended() const;
  bool cancel_requested() const { return cancel_.load(); }
  void throw_if_cancelled() const;  // throws JobCancelled

  // For the work: append an event (subscribers wake); set the final HTTP answer (status, JSON body).
  void emit(std::string name, std::string data);
  void set_result(int status, std::string body);

  // For readers. Events from index `from` on, waiting up to `wait` for one when there is none yet; `ended` says
  // whether the job had ended (no more events will come) when the snapshot was taken.
  std::vector<JobEvent> events_since(size_t from, std::chrono::milliseconds wait, bool* ended) const;
  void wait() const;  // until the job has ended
  int status() const;
  std::string body() const;

 private:
  friend class JobQueue;
  void start();
  // Ends the job in `s`; when the work set no result, `status` / `message` become an error answer and event.
  void finish(JobState s, int status, const std::string& message);
  void request_cancel(int status, std::string reason);

  const std::string id_;
  Work work_;
  std::atomic<bool> cancel_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  JobState state_ = JobState::queued;
  std::vector<JobEvent> events_;
  int status_ = 0;
  std::string body_;
  int cancel_status_ = 409;
  std::string cancel_reason_;
};

enum class SubmitResult { accepted, full, closed };
enum class CancelResult { not_found, already_ended, cancelled, cancelling };

class JobQueue {
 public:
  // capacity: jobs that may wait (the running one not counted); keep_ended: ended jobs kept for GET and event
  // replay (oldest forgotten first), so memory stays bounded however many requests come.
  explicit JobQueue(size_t capacity, size_t keep_ended = 32);
  ~JobQueue();  // shutdown()
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  SubmitResult submit(const std::shared_ptr<Job>& job);
  std::shared_ptr<Job> find(const std::string& id) const;
  // A queued job is cancelled at once; a running one is asked to stop (its work checks at the next step).
  CancelResult cancel(const std::string& id);
  size_t waiting() const;
  bool busy() const;          // a job is running
  size_t capacity() const { return capacity_; }
  // Refuses new jobs, cancels the waiting ones (answer 503), asks the running one to stop and joins the worker.
  void shutdown();

 private:
  void worker_loop();
  void remember(const std::shared_ptr<Job>& job);  // under mu_

  const size_t capacity_, keep_ended_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::shared_ptr<Job> running_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // every job not yet forgotten
  std::deque<std::string> ended_order_;
  bool closed_ = false;
  std::thread worker_;
};

// A fresh job id: "job-" + 16 random hex digits.
std::string new_job_id();

}  // namespace iomm
