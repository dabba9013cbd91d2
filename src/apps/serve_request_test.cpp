#include "apps/serve_request.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

using namespace iomm;

namespace {

const ServeLimits kLimits{/*max_n=*/4, /*max_steps=*/50, /*max_prompt_chars=*/20, /*max_upload_bytes=*/1000, 8};
const ServedModel kModel{"tiny", 32};

// The refusal of a JSON body: status and message (the test names what the message must say).
RequestError refusal(const std::string& body) {
  try {
    parse_generation_request(body, kLimits, kModel);
  } catch (const RequestError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return RequestError(0, "");
}

void expect_refused(const std::string& body, const std::string& param, const std::string& says) {
  auto e = refusal(body);
  EXPECT_EQ(e.status, 400) << body;
  EXPECT_EQ(e.param, param) << body;
  EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << body << " -> " << e.what();
}

}  // namespace

TEST(ServeRequest, DefaultsAreTheCliDefaults) {
  auto r = parse_generation_request(R"({"prompt": "a red circle"})", kLimits, kModel);
  EXPECT_EQ(r.task, "generate");
  EXPECT_EQ(r.prompt, "a red circle");
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.seed_given);
  EXPECT_EQ(r.steps, 20);
  EXPECT_DOUBLE_EQ(r.cfg_scale, 4.5);
  EXPECT_EQ(r.sampler, "euler");
  EXPECT_DOUBLE_EQ(r.shift, 1.0);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.preview);
}

TEST(ServeRequest, EveryFieldIsRead) {
  auto r = parse_generation_request(
      R"({"prompt": "x", "n": 3, "seed": 18446744073709551615, "steps": 7, "cfg_scale": 2, "sampler": "dpmpp_2m",
          "shift": 1.5, "stream": true, "preview": true, "response_format": "b64_json", "model": "tiny",
          "size": "32x32"})",
      kLimits, kModel);
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.seed, 18446744073709551615ull);
  EXPECT_EQ(r.steps, 7);
  EXPECT_DOUBLE_EQ(r.cfg_scale, 2.0);
  EXPECT_EQ(r.sampler, "dpmpp_2m");
  EXPECT_DOUBLE_EQ(r.shift, 1.5);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.preview);
}

TEST(ServeRequest, BadRequestsNameTheFieldAndTheFix) {
  auto e = refusal("{\"prompt\": ");
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  EXPECT_NE(std::string(refusal("[1]").what()).find("JSON object"), std::string::npos);
  expect_refused(R"({"prompt": "x", "stepz": 3})", "stepz", "unknown field; the fields are prompt, n,");
  expect_refused(R"({"prompt": "x", "negative_prompt": "y"})", "negative_prompt", "no negative prompt");
  expect_refused(R"({"n": 1})", "prompt", "missing");
  expect_refused(R"({"prompt": "   "})", "prompt", "empty");
  expect_refused(R"({"prompt": "123456789012345678901"})", "prompt", "21 characters, over the limit of 20");
  expect_refused(R"({"prompt": 5})", "prompt", "expected a string, got 5");
  expect_refused(R"({"prompt": "x", "n": 5})", "n", "5 is outside 1..4 (the upper limit is the server's --max-n)");
  expect_refused(R"({"prompt": "x", "n": 0})", "n", "outside 1..4");
  expect_refused(R"({"prompt": "x", "n": 1.5})", "n", "expected an integer");
  expect_refused(R"({"prompt": "x", "steps": 51})", "steps", "--max-steps");
  expect_refused(R"({"prompt": "x", "seed": -1})", "seed", "non-negative integer");
  expect_refused(R"({"prompt": "x", "sampler": "ddim"})", "sampler", "\"euler\" or \"dpmpp_2m\"");
  expect_refused(R"({"prompt": "x", "shift": 0})", "shift", "> 0");
  expect_refused(R"({"prompt": "x", "cfg_scale": "high"})", "cfg_scale", "expected a number");
  expect_refused(R"({"prompt": "x", "response_format": "url"})", "response_format", "b64_json");
  expect_refused(R"({"prompt": "x", "model": "other"})", "model", "serves 'tiny' only");
  expect_refused(R"({"prompt": "x", "size": "64x64"})", "size", "32x32");
  expect_refused(R"({"prompt": "x", "stream": "yes"})", "stream", "true or false");
}

TEST(ServeRequest, PromptLengthCountsCharactersNotBytes) {
  // 20 two-byte characters (40 bytes) are within a 20-character limit.
  std::string s;
  for (int i = 0; i < 20; ++i) s += "\xc3\xa9";
  EXPECT_NO_THROW(parse_generation_request(nlohmann::json{{"prompt", s}}.dump(), kLimits, kModel));
  EXPECT_EQ(utf8_length(s), 20);
  EXPECT_EQ(utf8_length("\xff"), -1);
  EXPECT_EQ(utf8_length("\xc3"), -1);  // truncated sequence
}

TEST(ServeRequest, MultipartFieldsAreTypedLikeJson) {
  auto r = parse_edit_fields({{"prompt", "make it blue"}, {"seed", "7"}, {"steps", "3"}, {"cfg_scale", "1.5"},
                              {"stream", "true"}, {"n", "2"}},
                             kLimits, kModel);
  EXPECT_EQ(r.task, "edit");
  EXPECT_EQ(r.prompt, "make it blue");
  EXPECT_EQ(r.seed, 7u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.steps, 3);
  EXPECT_DOUBLE_EQ(r.cfg_scale, 1.5);
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.n, 2);
  auto refuse = [](std::map<std::string, std::string> f, const std::string& says) {
    try {
      parse_edit_fields(f, kLimits, kModel);
      ADD_FAILURE() << "accepted";
    } catch (const RequestError& e) {
      EXPECT_EQ(e.status, 400);
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  refuse({{"prompt", "x"}, {"steps", "3x"}}, "steps: '3x' is not an integer");
  refuse({{"prompt", "x"}, {"seed", "-2"}}, "seed: '-2' is not a non-negative integer");
  refuse({{"prompt", "x"}, {"cfg_scale", "nan"}}, "cfg_scale: 'nan' is not a number");
  refuse({{"prompt", "x"}, {"mask", "m"}}, "mask: unknown field; the fields are image, prompt");
  refuse({{"steps", "3"}}, "prompt: missing; give the editing instruction");
  refuse({{"prompt", "\xff\xfe"}}, "UTF-8");
}

// Found by fuzz/serve_request (corpus: crash-invalid-utf8-in-parse-error): nlohmann's parse error quotes the bytes
// it read, and a body with an invalid UTF-8 byte made error_body() throw instead of answering 400.
TEST(ServeRequest, ErrorBodyOfABodyWithInvalidUtf8IsValidJson) {
  try {
    parse_generation_request("{\"prompt\": \"a red circle\xfc\"}", ServeLimits{}, ServedModel{"m", 32});
    FAIL() << "an invalid UTF-8 body was accepted";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status, 400);
    std::string body;
    ASSERT_NO_THROW(body = error_body(e.what(), "invalid_request_error", e.param));
    const auto j = nlohmann::json::parse(body);
    const std::string message = j["error"]["message"];
    EXPECT_NE(message.find("not valid JSON"), std::string::npos) << message;
    EXPECT_NE(message.find("\xef\xbf\xbd"), std::string::npos) << message;  // the bad byte became U+FFFD
  }
}

// Found by fuzz/serve_request (corpus: crash-number-overflow): a number too large for a double is nlohmann's
// out_of_range, not a parse_error, and escaped the handler instead of being answered 400.
TEST(ServeRequest, ANumberTooLargeForADoubleIsABadRequest) {
  try {
    parse_generation_request("{\"prompt\": \"x\", \"cfg_scale\": 2e2211}", ServeLimits{}, ServedModel{"m", 32});
    FAIL() << "an overflowing number was accepted";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

TEST(ServeRequest, ErrorBodyAndBase64) {
  auto e = nlohmann::json::parse(error_body("steps: too many", "invalid_request_error", "steps"));
  EXPECT_EQ(e["error"]["message"], "steps: too many");
  EXPECT_EQ(e["error"]["param"], "steps");
  EXPECT_TRUE(nlohmann::json::parse(error_body("m", "t"))["error"]["param"].is_null());
  auto b64 = [](const std::string& s) { return base64_encode(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foo"), "Zm9v");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(b64("\xff\xfe\x00"), "//4=");
}
