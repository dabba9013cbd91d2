# The README's two commands: `make demo` and `make test`. Both set up and build first.
BUILD ?= build
JOBS ?= $(shell nproc)
PYTHON ?= python3
DEMO_OUT ?= runs/demo
DEMO_LONG_OUT ?= runs/demo-long

.PHONY: setup configure build test test-setup test-unit test-conformance demo demo-long clean

setup:
	bash scripts/setup.sh

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: $(BUILD)/build.ninja

build: setup configure
	cmake --build $(BUILD) -j $(JOBS)

test-unit:
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-setup:
	IOMM_BIN=$(abspath $(BUILD))/iomm $(PYTHON) -m pytest -q tests/setup

test-conformance:
	IOMM_BIN=$(abspath $(BUILD))/iomm $(PYTHON) -m pytest -q tests/conformance

test: build
	$(MAKE) test-setup
	$(MAKE) test-unit
	$(MAKE) test-conformance

demo: build
	$(BUILD)/iomm demo --out $(DEMO_OUT)

# The same pipeline with a longer budget (configs/world/demo-long.toml), then ShapesEval of every kept stage-2
# checkpoint: the learning curve in $(DEMO_LONG_OUT)/curve-finetune.jsonl.
demo-long: build
	$(BUILD)/iomm demo --experiment configs/world/demo-long.toml --out $(DEMO_LONG_OUT)
	IOMM_BIN=$(BUILD)/iomm bash experiments/curve.sh $(DEMO_LONG_OUT) finetune

clean:
	rm -rf $(BUILD)
