#include "core/progress.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>

namespace iomm {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto t = static_cast<int64_t>(s + 0.5);
  int64_t h = t / 3600, m = (t % 3600) / 60, sec = t % 60;
  if (h > 0) return fmt::format("{}:{:02d}:{:02d}", h, m, sec);
  return fmt::format("{:02d}:{:02d}", m, sec);
}

ProgressBar::ProgressBar(int64_t total, std::string label, std::string unit)
    : total_(total), label_(std::move(label)), unit_(std::move(unit)), out_(stderr) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  tty_ = isatty(fileno(out_));
}

ProgressBar::~ProgressBar() { finish(); }

std::string ProgressBar::render(double elapsed) const {
  double rate = elapsed > 0 ? count_ / elapsed : 0.0;
  std::string rate_s = rate >= 1.0 || rate == 0.0 ? fmt::format("{:.2f} {}/s", rate, unit_)
                                                  : fmt::format("{:.2f} s/{}", 1.0 / rate, unit_);
  std::string line = label_.empty() ? "" : label_ + " ";
  if (total_ > 0) {
    double frac = std::min(1.0, static_cast<double>(count_) / total_);
    constexpr int width = 24;
    int filled = static_cast<int>(frac * width);
    std::string bar;
    for (int i = 0; i < width; ++i) bar += i < filled ? "#" : ".";
    double eta = rate > 0 ? (total_ - count_) / rate : NAN;
    line += fmt::format("{:3.0f}% [{}] {}/{} [{}<{}, {}]", frac * 100, bar, count_, total_,
                        format_duration(elapsed), format_duration(eta), rate_s);
  } else {
    line += fmt::format("{} [{}, {}]", count_, format_duration(elapsed), rate_s);
  }
  if (!postfix_.empty()) line += " " + postfix_;
  return line;
}

void ProgressBar::update(int64_t n, const std::string& postfix) {
  count_ += n;
  if (!postfix.empty()) postfix_ = postfix;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  bool done = total_ > 0 && count_ >= total_;
  if (done || (tty_ && since >= 0.1) || (!tty_ && since >= plain_interval_s)) draw(done);
}

void ProgressBar::draw(bool final) {
  auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string line = render(elapsed);
  if (tty_)
    fmt::print(out_, "\r\033[K{}{}", line, final ? "\n" : "");
  else
    fmt::print(out_, "{}\n", line);
  std::fflush(out_);
  if (final) finished_ = true;
}

void ProgressBar::finish() {
  if (finished_) return;
  draw(true);
}

}  // namespace iomm
