#include "apps/caption_metrics.h"

#include <cctype>
#include <optional>

namespace iomm {

namespace {

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::string w;
  for (char ch : s) {
    if (std::isalnum(static_cast<unsigned char>(ch))) {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    } else if (!w.empty()) {
      out.push_back(std::move(w));
      w.clear();
    }
  }
  if (!w.empty()) out.push_back(std::move(w));
  return out;
}

std::optional<std::string> shape_of(const std::string& w) {
  static const std::map<std::string, std::string> kShapes = {
      {"circle", "circle"},     {"circles", "circle"}, {"square", "square"}, {"squares", "square"},
      {"triangle", "triangle"}, {"triangles", "triangle"}, {"cross", "cross"}, {"crosses", "cross"}};
  auto it = kShapes.find(w);
  return it == kShapes.end() ? std::nullopt : std::optional(it->second);
}

bool is_colour(const std::string& w) {
  return w == "red" || w == "yellow" || w == "green" || w == "blue" || w == "purple";
}

std::optional<std::string> count_of(const std::string& w) {
  static const std::map<std::string, std::string> kCounts = {{"two", "two"}, {"three", "three"}, {"four", "four"},
                                                             {"2", "two"},   {"3", "three"},     {"4", "four"}};
  auto it = kCounts.find(w);
  return it == kCounts.end() ? std::nullopt : std::optional(it->second);
}

// Relation words with whether they must be turned round to reach the canonical {left of, above}.
std::optional<std::pair<std::string, bool>> relation_of(const std::string& w) {
  if (w == "left") return std::pair<std::string, bool>{"left of", false};
  if (w == "right") return std::pair<std::string, bool>{"left of", true};
  if (w == "above" || w == "over") return std::pair<std::string, bool>{"above", false};
  if (w == "below" || w == "under" || w == "beneath") return std::pair<std::string, bool>{"above", true};
  return std::nullopt;
}

}  // namespace

std::vector<std::string> caption_content_words(const std::string& caption) {
  const auto ws = words(caption);
  std::vector<std::string> out;
  for (size_t i = 0; i < ws.size(); ++i) {
    if (auto s = shape_of(ws[i])) {
      out.push_back(*s);
    } else if (is_colour(ws[i])) {
      out.push_back(ws[i]);
    } else if (auto n = count_of(ws[i])) {
      out.push_back(*n);
    } else if (auto r = relation_of(ws[i])) {
      std::string subject = "?", object = "?";
      for (size_t k = i; k-- > 0;)
        if (auto s = shape_of(ws[k])) {
          subject = *s;
          break;
        }
      for (size_t k = i + 1; k < ws.size(); ++k)
        if (auto s = shape_of(ws[k])) {
          object = *s;
          break;
        }
      if (r->second) std::swap(subject, object);
      out.push_back(subject + " " + r->first + " " + object);
    }
  }
  return out;
}

CaptionScore score_caption(const std::string& reference, const std::string& generated) {
  CaptionScore s;
  std::map<std::string, int> have;
  const auto gen = caption_content_words(generated);
  for (const auto& w : gen) ++have[w];
  const auto ref = caption_content_words(reference);
  s.reference_words = static_cast<int>(ref.size());
  for (const auto& w : ref) {
    auto it = have.find(w);
    if (it != have.end() && it->second > 0) {
      --it->second;
      ++s.matched;
    }
  }
  s.all_match = s.matched == s.reference_words && gen.size() == ref.size();
  s.exact = reference == generated;
  return s;
}

void CaptionTotals::add(const CaptionScore& s) {
  ++captions;
  exact += s.exact;
  all_match += s.all_match;
  reference_words += s.reference_words;
  matched += s.matched;
}

}  // namespace iomm
