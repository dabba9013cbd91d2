#include "data/sample_stream.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/error.h"
#include "data/image.h"
#include "data/image_pool.h"

namespace iomm::data {

namespace {

// splitmix64: a fully specified generator, so orders are the same on every platform and standard library
// (std::shuffle's algorithm is not specified).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return size_t(next() % uint64_t(n)); }  // bias < n / 2^64
};

uint64_t mix(uint64_t seed, int64_t epoch, int64_t rank) {
  Rng r(seed ^ (uint64_t(epoch) * 0xD1B54A32D192ED03ULL) ^ (uint64_t(rank + 1) * 0xAEF17502108EF2D9ULL));
  return r.next();
}

// Structural UTF-8 check (lead byte and continuation bytes): a caption that fails it is skipped, not tokenised.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += len;
  }
  return true;
}

struct Candidate {
  int64_t seq = 0, epoch = 0, index = 0;
  Sample raw;
  SkipCounts reader_skips;  // what the reader skipped since the previous candidate (counted when this one is)
};

// What the consumer takes, in seq order: a decoded sample, a skip, or the end of an epoch.
struct Result {
  int64_t epoch = 0, index = 0;
  bool end_of_epoch = false;
  std::optional<StreamSample> sample;
  std::string skip_cause, skip_example;
  SkipCounts reader_skips;  // the candidate's (or, at the end of an epoch, the rest of the epoch's)
  std::exception_ptr error;
};


}  // namespace

std::optional<SampleSkip> prepare_sample(const Sample& raw, int resolution, bool require_caption, bool jpeg_draft,
                                        StreamSample& out) {
  const std::string where = raw.shard + ": " + raw.key;
  out = StreamSample{};
  try {
    auto cap = raw.caption();
    if (cap && !valid_utf8(*cap)) throw Error(where + ": caption is not valid UTF-8");
    if (cap) out.caption = std::move(*cap);
  } catch (const Error& e) {
    if (require_caption) return SampleSkip{"bad_caption", e.what()};
  }
  if (require_caption && out.caption.empty()) return SampleSkip{"no_caption", where};
  try {
    if (!raw.image()) return SampleSkip{"no_image", where};
    out.image = training_image(raw, resolution, jpeg_draft);
  } catch (const Error& e) {
    return SampleSkip{"undecodable", e.what()};
  }
  out.key = raw.key;
  out.shard = raw.shard;
  return std::nullopt;
}

std::optional<SampleSkip> prepare_feature_sample(const Sample& raw, bool require_caption, StreamSample& out) {
  const std::string where = raw.shard + ": " + raw.key;
  out = StreamSample{};
  try {
    out.features = read_feature_sample(raw);
  } catch (const Error& e) {
    return SampleSkip{"undecodable", e.what()};
  }
  const auto& f = *out.features;
  // Shapes a batch can stack (the manifest's, checked by fingerprint, are per cache; this guards one damaged sample).
  if (f.latents.dim() != 3 || f.c_img.dim() != 2 || (f.input_ids.defined() && f.input_ids.dim() != 1))
    return SampleSkip{"undecodable", fmt::format("{}: cached tensors of ranks {}, {} (want latents [C, h, w], c_img "
                                                 "[T, D], input_ids [L])",
                                                 where, f.latents.dim(), f.c_img.dim())};
  if (f.caption && valid_utf8(*f.caption)) out.caption = *f.caption;
  if (require_caption && f.caption && !valid_utf8(*f.caption))
    return SampleSkip{"bad_caption", where + ": caption is not valid UTF-8"};
  if (require_caption && (out.caption.empty() || !f.input_ids.defined())) return SampleSkip{"no_caption", where};
  out.key = raw.key;
  out.shard = raw.shard;
  return std::nullopt;
}

namespace {

Result decode(Candidate& c, const StreamOptions& o) {
  Result r;
  r.epoch = c.epoch;
  r.index = c.index;
  StreamSample s;
  auto skip = o.features ? prepare_feature_sample(c.raw, o.require_captions, s)
                         : prepare_sample(c.raw, o.resolution, o.require_captions, o.jpeg_draft, s);
  if (skip) {
    r.skip_cause = skip->cause;
    r.skip_example = skip->example;
    return r;
  }
  s.position = {c.epoch, c.index};
  r.sample = std::move(s);
  return r;
}

struct StopReading {};

}  // namespace

std::vector<size_t> epoch_units(size_t n, uint64_t seed, int64_t epoch, int rank, int world_size) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  Rng rng(mix(seed, epoch, -1));
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  std::vector<size_t> mine;
  for (size_t i = size_t(rank); i < n; i += size_t(world_size)) mine.push_back(order[i]);
  return mine;
}

struct SampleStream::Pipeline {
  const DataSource& source;
  const StreamOptions o;
  const StreamPosition start_at;
  std::mutex m;
  std::condition_variable cv_jobs, cv_results, cv_space;
  std::deque<Candidate> jobs;
  std::map<int64_t, Result> results;
  int64_t issued = 0, consumed = 0;
  bool stopping = false;
  std::exception_ptr reader_error;
  std::thread reader;
  std::vector<std::thread> workers;

  Pipeline(const DataSource& s, StreamOptions opt, StreamPosition at) : source(s), o(opt), start_at(at) {}

  // Blocks until there is room `prefetch` ahead of the consumer; throws StopReading when stopping.
  int64_t reserve(std::unique_lock<std::mutex>& lk) {
    cv_space.wait(lk, [&] { return stopping || issued - consumed < o.prefetch; });
    if (stopping) throw StopReading{};
    return issued++;
  }

  void push_candidate(Candidate c) {
    std::unique_lock lk(m);
    c.seq = reserve(lk);
    jobs.push_back(std::move(c));
    cv_jobs.notify_one();
  }

  void read_epoch(int64_t epoch) {
    Rng rng(mix(o.seed, epoch, o.rank));
    std::vector<Sample> buf;
    int64_t index = 0;
    SkipCounts skips;  // since the last candidate: they travel with the next one, so counts follow the position
    auto emit = [&](Sample&& s) {
      const bool replayed = epoch == start_at.epoch && index < start_at.index;  // consumed before the restart
      if (!replayed) push_candidate({0, epoch, index, std::move(s), std::move(skips)});
      skips = SkipCounts{};
      ++index;
    };
    for (size_t u : epoch_units(source.units.size(), o.seed, epoch, o.rank, o.world_size)) {
      read_unit(
          source.units[u], skips,
          [&](Sample&& s) {
            if (int64_t(buf.size()) < o.shuffle_buffer) return buf.push_back(std::move(s));
            size_t j = rng.below(buf.size());
            emit(std::move(buf[j]));
            buf[j] = std::move(s);
          },
          source.required_member);
    }
    while (!buf.empty()) {
      size_t j = rng.below(buf.size());
      emit(std::move(buf[j]));
      buf[j] = std::move(buf.back());
      buf.pop_back();
    }
    std::unique_lock lk(m);
    Result end;
    end.epoch = epoch;
    end.index = index;
    end.end_of_epoch = true;
    end.reader_skips = std::move(skips);
    results[reserve(lk)] = std::move(end);
    cv_results.notify_all();
  }

  void read_loop() {
    try {
      for (int64_t epoch = start_at.epoch;; ++epoch) read_epoch(epoch);
    } catch (const StopReading&) {
    } catch (...) {
      std::lock_guard lk(m);
      reader_error = std::current_exception();
      cv_results.notify_all();
    }
  }

  void work_loop() {
    for (;;) {
      Candidate c;
      {
        std::unique_lock lk(m);
        cv_jobs.wait(lk, [&] { return stopping || !jobs.empty(); });
        if (stopping) return;
        c = std::move(jobs.front());
        jobs.pop_front();
      }
      Result r;
      try {
        r = decode(c, o);
      } catch (...) {
        r.error = std::current_exception();
      }
      r.reader_skips = std::move(c.reader_skips);
      std::lock_guard lk(m);
      results[c.seq] = std::move(r);
      cv_results.notify_all();
    }
  }

  Result take() {
    std::unique_lock lk(m);
    cv_results.wait(lk, [&] { return results.count(consumed) || (reader_error && consumed >= issued); });
    if (!results.count(consumed)) std::rethrow_exception(reader_error);
    Result r = std::move(results[consumed]);
    results.erase(consumed++);
    cv_space.notify_one();
    if (r.error) std::rethrow_exception(r.error);
    return r;
  }

  void start() {
    reader = std::thread([this] { read_loop(); });
    for (int i = 0; i < std::max(1, o.workers); ++i) workers.emplace_back([this] { work_loop(); });
  }

  ~Pipeline() {
    {
      std::lock_guard lk(m);
      stopping = true;
    }
    cv_space.notify_all();
    cv_jobs.notify_all();
    if (reader.joinable()) reader.join();
    for (auto& w : workers) w.join();
  }
};

SampleStream::SampleStream(DataSource source, StreamOptions options)
    : source_(std::move(source)), options_(options) {
  auto& o = options_;
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    fail("data stream: rank {} of world size {} is out of range", o.rank, o.world_size);
  if (source_.units.size() < size_t(o.world_size))
    fail("data '{}' has {} shards (units), fewer than the {} ranks reading it: every rank needs at least one; "
         "split the data into more shards",
         source_.spec, source_.units.size(), o.world_size);
  if (o.resolution < 1) fail("data stream: resolution must be >= 1, got {}", o.resolution);
  o.shuffle_buffer = std::max<int64_t>(1, o.shuffle_buffer);
  o.prefetch = std::max<int64_t>(1, o.prefetch);
  o.workers = std::max(1, o.workers);
}

SampleStream::~SampleStream() { stop(); }

void SampleStream::start(StreamPosition at) {
  pipe_ = std::make_unique<Pipeline>(source_, options_, at);
  pipe_->start();
}

void SampleStream::stop() { pipe_.reset(); }

std::optional<StreamSample> SampleStream::next_in_epoch() {
  if (!pipe_) start(pos_);
  for (;;) {
    Result r = pipe_->take();
    skips_.merge(r.reader_skips);
    if (r.end_of_epoch) {
      if (!epoch_had_sample_)
        fail("data '{}' gave no usable sample in epoch {} (rank {} of {}); skipped: {}", source_.spec, r.epoch,
             options_.rank, options_.world_size, skips().summary());
      pos_ = {r.epoch + 1, 0};
      epoch_had_sample_ = false;
      return std::nullopt;
    }
    pos_ = {r.epoch, r.index + 1};
    if (!r.sample) {
      skips_.add(r.skip_cause, r.skip_example);
      continue;
    }
    ++delivered_;
    epoch_had_sample_ = true;
    return std::move(*r.sample);
  }
}

StreamSample SampleStream::next() {
  for (;;) {
    if (auto s = next_in_epoch()) return std::move(*s);
    // Epoch 0 on one rank read every sample once (its counts survive a resume): damage shows against the index.
    if (pos_.epoch == 1 && options_.world_size == 1) {
      index_mismatch_ = check_against_index(source_, delivered_, skips_);
      if (!index_mismatch_.empty()) spdlog::warn("{}", index_mismatch_);
    }
  }
}

StreamPosition SampleStream::position() const { return pos_; }
int64_t SampleStream::delivered() const { return delivered_; }

SkipCounts SampleStream::skips() const { return skips_; }

namespace {

nlohmann::json counts_json(const SkipCounts& c) {
  return {{"count", c.count}, {"first", c.first}};
}

SkipCounts counts_from(const nlohmann::json& j) {
  SkipCounts c;
  c.count = j.at("count").get<std::map<std::string, int64_t>>();
  c.first = j.at("first").get<std::map<std::string, std::string>>();
  return c;
}

}  // namespace

nlohmann::json SampleStream::state() const {
  return {{"epoch", pos_.epoch},           {"index", pos_.index},
          {"rank", options_.rank},         {"world_size", options_.world_size},
          {"seed", options_.seed},         {"shuffle_buffer", options_.shuffle_buffer},
          {"units", source_.units.size()}, {"delivered", delivered_},
          {"skips", counts_json(skips_)}};
}

void SampleStream::restore(const nlohmann::json& st, const std::string& where) {
  auto check = [&](const char* key, int64_t now, const char* fix) {
    int64_t was = st.at(key).get<int64_t>();
    if (was != now)
      fail("{}: the data position was saved with {} = {}, this run has {}: {}", where, key, was, now, fix);
  };
  try {
    check("world_size", options_.world_size, "resume with the same number of processes");
    check("rank", options_.rank, "resume with the same number of processes");
    check("seed", int64_t(options_.seed), "resume with the same train.seed");
    check("shuffle_buffer", options_.shuffle_buffer, "resume with the same data.shuffle_buffer");
    check("units", int64_t(source_.units.size()), "resume on the same data (its shards were added or removed)");
    stop();
    pos_ = {st.at("epoch").get<int64_t>(), st.at("index").get<int64_t>()};
    delivered_ = st.at("delivered").get<int64_t>();
    epoch_had_sample_ = pos_.index > 0;  // not known for the part before the restart: do not fail on it
    skips_ = counts_from(st.at("skips"));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: the saved data position is malformed ({}); the checkpoint is damaged", where, e.what());
  }
}

}  // namespace iomm::data
