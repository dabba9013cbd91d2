// A progress bar with rate and ETA for long loops. On a terminal it redraws one line; elsewhere (CI, log
// files) it prints a plain line at most every `plain_interval_s` seconds, so logs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace iomm {

class ProgressBar {
 public:
  ProgressBar(int64_t total, std::string label, std::string unit = "it");
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Advances by `n` and sets the text shown after the bar (e.g. "loss=0.123").
  void update(int64_t n = 1, const std::string& postfix = "");
  void set_postfix(const std::string& postfix) { postfix_ = postfix; }
  void finish();

  int64_t count() const { return count_; }
  // The line as it is drawn now (without terminal control codes); exposed for tests.
  std::string render(double elapsed_s) const;

  double plain_interval_s = 10.0;

 private:
  void draw(bool final);

  int64_t total_;
  int64_t count_ = 0;
  std::string label_, unit_, postfix_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool tty_;
  bool finished_ = false;
  FILE* out_;
};

// "1h02m03s" / "02:03" style durations used by the bar and by reports.
std::string format_duration(double seconds);

}  // namespace iomm
