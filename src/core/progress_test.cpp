#include <gtest/gtest.h>

#include "core/error.h"
#include "core/metrics.h"
#include "core/progress.h"

using namespace iomm;

TEST(Progress, RenderShowsCountRateAndEta) {
  ProgressBar bar(100, "train", "step");
  bar.plain_interval_s = 1e9;  // never draw during the test
  bar.update(25, "loss=0.5");
  std::string line = bar.render(5.0);  // 25 steps in 5 s -> 5 step/s, 75 left -> 15 s
  EXPECT_NE(line.find(" 25%"), std::string::npos) << line;
  EXPECT_NE(line.find("25/100"), std::string::npos) << line;
  EXPECT_NE(line.find("5.00 step/s"), std::string::npos) << line;
  EXPECT_NE(line.find("00:05<00:15"), std::string::npos) << line;
  EXPECT_NE(line.find("loss=0.5"), std::string::npos) << line;
}

TEST(Progress, SlowRatesShownAsSecondsPerItem) {
  ProgressBar bar(10, "", "img");
  bar.plain_interval_s = 1e9;
  bar.update(1);
  EXPECT_NE(bar.render(4.0).find("4.00 s/img"), std::string::npos) << bar.render(4.0);
}

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(61), "01:01");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "?");
}

TEST(Metrics, JsonlRoundTripAndAppend) {
  std::string path = ::testing::TempDir() + "/metrics_test.jsonl";
  {
    MetricsWriter w(path);
    w.write({{"step", 1}, {"loss", 0.5}});
  }
  {
    MetricsWriter w(path, /*append=*/true);
    w.write({{"step", 2}, {"loss", 0.25}});
  }
  auto rows = read_jsonl(path);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["step"], 1);
  EXPECT_DOUBLE_EQ(rows[1]["loss"].get<double>(), 0.25);
  EXPECT_TRUE(rows[1].contains("time"));
}

TEST(Metrics, MalformedLineNamesFileAndLine) {
  std::string path = ::testing::TempDir() + "/bad.jsonl";
  { std::ofstream(path) << "{\"a\":1}\n{oops\n"; }
  try {
    read_jsonl(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
}
