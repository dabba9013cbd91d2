#include "apps/job_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

using namespace iomm;
using namespace std::chrono_literals;

namespace {

// A job whose work blocks until `release` is set (or it is cancelled), checking like the step callback does.
std::shared_ptr<Job> blocking_job(const std::string& id, std::atomic<bool>* release, std::atomic<int>* ran = nullptr) {
  return std::make_shared<Job>(id, [release, ran](Job& j) {
    if (ran) ++*ran;
    while (!release->load()) {
      j.throw_if_cancelled();
      std::this_thread::sleep_for(1ms);
    }
    j.emit("progress", "{}");
    j.set_result(200, R"({"ok":true})");
  });
}

void wait_until(const std::function<bool()>& cond) {
  for (int i = 0; i < 5000 && !cond(); ++i) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(cond());
}

std::vector<std::string> names(const std::vector<JobEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.name);
  return out;
}

}  // namespace

TEST(ServeJobQueue, BoundedWaitingJobsAndTheRunningOneUncounted) {
  std::atomic<bool> release{false};
  JobQueue q(2);
  auto running = blocking_job("a", &release);
  ASSERT_EQ(q.submit(running), SubmitResult::accepted);
  wait_until([&] { return running->state() == JobState::running; });
  EXPECT_EQ(q.submit(blocking_job("b", &release)), SubmitResult::accepted);
  EXPECT_EQ(q.submit(blocking_job("c", &release)), SubmitResult::accepted);
  EXPECT_EQ(q.submit(blocking_job("d", &release)), SubmitResult::full);  // 2 waiting + 1 running
  EXPECT_EQ(q.waiting(), 2u);
  EXPECT_TRUE(q.busy());
  release = true;
  auto last = q.find("c");
  ASSERT_TRUE(last);
  last->wait();
  EXPECT_EQ(last->state(), JobState::done);
  EXPECT_EQ(last->status(), 200);
  EXPECT_EQ(last->body(), R"({"ok":true})");
  EXPECT_EQ(q.find("d"), nullptr);  // a refused job is not remembered
}

TEST(ServeJobQueue, EventsInOrderEndingWithDone) {
  std::atomic<bool> release{true};
  JobQueue q(4);
  auto job = blocking_job("a", &release);
  ASSERT_EQ(q.submit(job), SubmitResult::accepted);
  job->wait();
  bool ended = false;
  auto events = job->events_since(0, 0ms, &ended);
  EXPECT_TRUE(ended);
  EXPECT_EQ(names(events), (std::vector<std::string>{"queued", "started", "progress", "done"}));
  EXPECT_EQ(events.back().data, R"({"ok":true})");
  EXPECT_EQ(names(job->events_since(2, 0ms, &ended)), (std::vector<std::string>{"progress", "done"}));
}

TEST(ServeJobQueue, CancelQueuedAtOnceAndRunningAtTheNextCheck) {
  std::atomic<bool> release{false};
  std::atomic<int> ran{0};
  JobQueue q(4);
  auto running = blocking_job("run", &release, &ran);
  auto queued = blocking_job("wait", &release, &ran);
  q.submit(running);
  wait_until([&] { return running->state() == JobState::running; });
  q.submit(queued);
  EXPECT_EQ(q.cancel("wait"), CancelResult::cancelled);
  EXPECT_EQ(queued->state(), JobState::cancelled);  // at once, without waiting for the worker
  EXPECT_EQ(queued->status(), 409);
  EXPECT_EQ(q.cancel("run"), CancelResult::cancelling);
  running->wait();
  EXPECT_EQ(running->state(), JobState::cancelled);
  EXPECT_EQ(running->status(), 409);
  auto body = nlohmann::json::parse(running->body());
  EXPECT_EQ(body["error"]["type"], "cancelled");
  bool ended = false;
  EXPECT_EQ(running->events_since(0, 0ms, &ended).back().name, "cancelled");
  EXPECT_EQ(ran.load(), 1);  // the cancelled waiting job never ran
  EXPECT_EQ(q.cancel("run"), CancelResult::already_ended);
  EXPECT_EQ(q.cancel("nope"), CancelResult::not_found);
  // The worker lets go of the job just after finishing it (wait() returns at the finish): not at once.
  wait_until([&] { return !q.busy(); });
  EXPECT_FALSE(q.busy());
}

TEST(ServeJobQueue, AFailingJobBecomesA500AndTheWorkerGoesOn) {
  JobQueue q(4);
  auto bad = std::make_shared<Job>("bad", [](Job&) { throw std::runtime_error("boom"); });
  auto good = std::make_shared<Job>("good", [](Job& j) { j.set_result(200, "{}"); });
  q.submit(bad);
  q.submit(good);
  good->wait();
  EXPECT_EQ(bad->state(), JobState::failed);
  EXPECT_EQ(bad->status(), 500);
  EXPECT_NE(bad->body().find("boom"), std::string::npos);
  EXPECT_EQ(good->state(), JobState::done);
}

TEST(ServeJobQueue, ShutdownCancelsWaitingAndRunningWith503AndRefusesNewJobs) {
  std::atomic<bool> release{false};
  JobQueue q(4);
  auto running = blocking_job("run", &release);
  auto queued = blocking_job("wait", &release);
  q.submit(running);
  wait_until([&] { return running->state() == JobState::running; });
  q.submit(queued);
  q.shutdown();  // returns only after the worker has ended
  EXPECT_EQ(running->state(), JobState::cancelled);
  EXPECT_EQ(running->status(), 503);
  EXPECT_EQ(queued->state(), JobState::cancelled);
  EXPECT_EQ(queued->status(), 503);
  EXPECT_EQ(q.submit(blocking_job("late", &release)), SubmitResult::closed);
}

TEST(ServeJobQueue, EndedJobsAreForgottenOldestFirst) {
  JobQueue q(8, /*keep_ended=*/2);
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 4; ++i) {
    jobs.push_back(std::make_shared<Job>("j" + std::to_string(i), [](Job& j) { j.set_result(200, "{}"); }));
    q.submit(jobs.back());
  }
  jobs.back()->wait();
  wait_until([&] { return !q.busy(); });
  EXPECT_EQ(q.find("j0"), nullptr);
  EXPECT_EQ(q.find("j1"), nullptr);
  EXPECT_NE(q.find("j2"), nullptr);
  EXPECT_NE(q.find("j3"), nullptr);
}

TEST(ServeJobQueue, EventsSinceWaitsForTheNextEvent) {
  auto job = std::make_shared<Job>("x", [](Job&) {});
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    job->emit("progress", "1");
  });
  bool ended = true;
  auto events = job->events_since(0, 5s, &ended);
  t.join();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "1");
  EXPECT_FALSE(ended);
  EXPECT_TRUE(new_job_id().rfind("job-", 0) == 0);
  EXPECT_NE(new_job_id(), new_job_id());
}
