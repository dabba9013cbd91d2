# The README's two commands: `make demo` and `make test`. Both set up and build first.
BUILD ?= build
JOBS ?= $(shell nproc)
PYTHON ?= python3
DEMO_OUT ?= runs/demo

.PHONY: setup configure build test test-setup test-unit test-conformance demo clean

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

clean:
	rm -rf $(BUILD)
