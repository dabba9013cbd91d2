// The tiny world's PRNG: xoshiro256** seeded through splitmix64. Every draw is specified here bit for bit
// (no std:: distributions, whose output differs between standard libraries), so a seed gives the same
// corpus on every platform.
#pragma once
#include <cmath>
#include <cstdint>
#include <string_view>

namespace iomm::world {

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// FNV-1a: turns a stream name ("captioned", "image") into a seed component.
inline uint64_t hash_name(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

class Rng {
 public:
  // Independent streams per (seed, stream, index): a sample's content does not depend on generation order.
  explicit Rng(uint64_t seed, uint64_t stream = 0, uint64_t index = 0) {
    uint64_t sm = seed ^ splitmix64(stream) ^ (index * 0xD1342543DE82EF95ull);
    for (auto& w : s_) w = splitmix64(sm);
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  // Uniform integer in [0, n) without modulo bias (rejection of the short last bucket).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }
  int range(int lo, int hi_inclusive) { return lo + static_cast<int>(below(uint64_t(hi_inclusive - lo + 1))); }
  bool chance(double p) { return uniform() < p; }

  // Standard normal by Box-Muller (libm's log/cos: for test noise only, never for corpus bytes).
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace iomm::world
