// Caption scores for the tiny world's understanding model: does a generated caption say what the reference says?
//
// The caption grammar draws its phrasing at random ("a circle" / "one circle" / "a picture of a circle"; "a circle
// left of a square" / "a square to the right of a circle"), so an image does not determine its caption's words and
// exact match is a harsh bar. Content words are what an image does determine: shapes, colours, counts and
// relations, in a canonical form:
//  - shapes singular ("circles" -> circle), colours as is, counts 2..4 as words ("3" -> three; "a"/"one" are the
//    phrasing of a single object, not a count);
//  - a relation becomes one fact "SUBJECT REL OBJECT" with REL in {left of, above}: "right of"/"below" (and the
//    synonyms over, under, beneath) are turned round, so "a square to the right of a circle" and "a circle left of
//    a square" give the same fact; SUBJECT/OBJECT are the nearest shape words before/after the relation word.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace iomm {

// The canonical content words of `caption`, in order of appearance (a relation fact where its relation word is).
std::vector<std::string> caption_content_words(const std::string& caption);

struct CaptionScore {
  int reference_words = 0;  // content words of the reference
  int matched = 0;          // of those, present in the generated caption (as a multiset: each used once)
  bool all_match = false;   // same content words as a multiset: nothing missing, nothing extra
  bool exact = false;       // identical strings
};

CaptionScore score_caption(const std::string& reference, const std::string& generated);

struct CaptionTotals {
  int64_t captions = 0, exact = 0, all_match = 0;
  int64_t reference_words = 0, matched = 0;
  void add(const CaptionScore& s);
  double exact_rate() const { return captions ? double(exact) / captions : 0.0; }
  double all_match_rate() const { return captions ? double(all_match) / captions : 0.0; }
  // Fraction of the reference content words found in the generated captions (pooled over captions).
  double content_accuracy() const { return reference_words ? double(matched) / reference_words : 0.0; }
};

}  // namespace iomm
