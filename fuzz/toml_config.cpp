// TOML run and model configs as `--config FILE` reads them: parsing, `base` files (base.toml sits beside the input,
// and the input itself is run.toml, so a self-reference is reachable), typed getters on the keys the trainer reads,
// the resolved dump, and `--set` assignments read back from assignments().
#include "core/config.h"
#include "fuzz_util.h"

using namespace iomm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  fuzz::write_file(fuzz::scratch_path("base.toml"), "[train]\nsteps = 10\nlr = 1e-4\n[model]\nname = \"b\"\n");
  return 0;
}

namespace {

void read_like_a_trainer(Config& c) {
  fuzz::refusal_is_fine([&] { (void)c.get_int("train.steps", 1, 1, 1'000'000); });
  fuzz::refusal_is_fine([&] { (void)c.get_double("train.lr", 1e-4, 0, 1); });
  fuzz::refusal_is_fine([&] { (void)c.get_bool("train.ema", true); });
  fuzz::refusal_is_fine([&] { (void)c.get_string("model.name", "x"); });
  fuzz::refusal_is_fine([&] { (void)c.get_choice("train.stage", "pretrain", {"pretrain", "finetune"}); });
  fuzz::refusal_is_fine([&] { (void)c.get_int_list("model.sizes", {1}); });
  fuzz::refusal_is_fine([&] { (void)c.get_double_list("model.ratios", {0.5}); });
  fuzz::refusal_is_fine([&] { (void)c.get_string_list("data.shards", {}); });
  fuzz::refusal_is_fine([&] { c.check_unused(); });
  (void)c.dump_resolved();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_path("run.toml");
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::refusal_is_fine([&] {
    Config c = Config::load(path);
    (void)c.dump_input();
    Config copy;
    for (const auto& key : c.top_level_keys())
      fuzz::refusal_is_fine([&] {
        for (const auto& a : c.assignments(key)) copy.set(key + "." + a);  // what --set reads back
      });
    read_like_a_trainer(c);
    copy.merge(c);
    (void)copy.dump_input();
  });
  return 0;
}
