# Tessera's entry points. Each bootstraps (installs what is missing), configures and builds
# into build/ with ccache, then does its job.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
ifeq ($(CI),true)
  CMAKE_ARGS += -DTESSERA_WERROR=ON
endif

.PHONY: all bootstrap configure build demo test test-sanitize bench fuzz docs format clean

all: build

# --docs: doxygen too, so that `make test` runs the API-reference check (ctest -L packaging).
bootstrap:
	@scripts/bootstrap --docs >/dev/null

configure: bootstrap
	@if [ ! -f $(BUILD_DIR)/CMakeCache.txt ]; then \
	  cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS); \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	$(BUILD_DIR)/bin/tessera demo --out out/demo

# Every suite writes its results into $(BUILD_DIR)/test-results; scripts/test-summary then prints
# how many cases ran and each skip with its reason (a suite is one ctest entry, so ctest alone
# cannot show a skipped case). TESSERA_REQUIRE_ALL=1 (set by .ci/run) makes a skip for a missing
# prerequisite a failure (tests/common/prerequisite.h).
test: build
	@rm -rf $(BUILD_DIR)/test-results
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) \
	  --output-junit $(abspath $(BUILD_DIR))/test-results/ctest.xml; \
	  status=$$?; python3 $(CURDIR)/scripts/test-summary $(abspath $(BUILD_DIR))/test-results; \
	  exit $$status

bench: build
	@mkdir -p $(BUILD_DIR)/bench
	@set -e; for b in $(BUILD_DIR)/bench/*_bench; do \
	  [ -x "$$b" ] || continue; echo "== $$b"; "$$b" --out $(BUILD_DIR)/bench; done
	@echo "== bench/python_attention_bench.py"; venv=$$(scripts/bootstrap) && \
	  PYTHONPATH=$(BUILD_DIR)/python $$venv/bin/python bench/python_attention_bench.py --out $(BUILD_DIR)/bench
	@echo "== bench/distributed_bench.py"; venv=$$(scripts/bootstrap) && \
	  $$venv/bin/python bench/distributed_bench.py --tessera $(BUILD_DIR)/bin/tessera \
	    --out $(BUILD_DIR)/bench/distributed.json

# The test suites built with AddressSanitizer and UndefinedBehaviorSanitizer into $(SANITIZE_DIR)
# (the library included; LibTorch itself is not instrumented). Any report fails the run. Every
# suite but the CUDA one (no GPU, and its CPU emulation is not Tessera's run-time code) and the
# packaging tests (they rebuild outside projects); docs/fuzzing.md, "Sanitizers".
SANITIZE_DIR ?= build-sanitize
SANITIZE_SUITES ?= core io data attention nn tokenizer head schedule next_scale pipeline train eval compat hardening
SANITIZE_LABELS ?= core|io|data|attention|backbone|tokenizer|head|schedule|pipeline|train|eval|compat|hardening
SANITIZE_FLAGS = -fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=all -fno-omit-frame-pointer
test-sanitize: bootstrap
	@if [ ! -f $(SANITIZE_DIR)/CMakeCache.txt ]; then \
	  cmake -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_BUILD_BENCH=OFF \
	    -DTESSERA_BUILD_EXAMPLES=OFF -DTESSERA_INSTALL=OFF \
	    -DTESSERA_CUDA=OFF -DCMAKE_CXX_FLAGS="$(SANITIZE_FLAGS)" \
	    -DCMAKE_EXE_LINKER_FLAGS="$(SANITIZE_FLAGS)" -DCMAKE_SHARED_LINKER_FLAGS="$(SANITIZE_FLAGS)"; \
	fi
	cmake --build $(SANITIZE_DIR) -j $(JOBS) --target tessera_cli \
	  $(foreach suite,$(SANITIZE_SUITES),tessera_$(suite)_tests)
	@nm -D $(SANITIZE_DIR)/libtessera.so | grep -q __asan_report_load && \
	  nm -D $(SANITIZE_DIR)/libtessera.so | grep -q __ubsan_handle || \
	  { echo "test-sanitize: $(SANITIZE_DIR)/libtessera.so is not instrumented (was it configured without SANITIZE_FLAGS?)"; exit 1; }
	cd $(SANITIZE_DIR) && \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -L '$(SANITIZE_LABELS)'

# libFuzzer targets (fuzz/, docs/fuzzing.md), built with clang into $(FUZZ_DIR); each runs
# FUZZ_SECONDS from its committed seed corpus after replaying the kept reproducers.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors config idx image png jpeg
fuzz:
	@scripts/bootstrap --fuzz >/dev/null
	@if [ ! -f $(FUZZ_DIR)/CMakeCache.txt ]; then \
	  cmake -S fuzz -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14; \
	fi
	cmake --build $(FUZZ_DIR) -j $(JOBS)
	FUZZ_TARGETS="$(FUZZ_TARGETS)" scripts/run-fuzzers $(FUZZ_DIR) $(FUZZ_SECONDS)

# The API reference (docs/api.md): doxygen over include/tessera/ into $(DOCS_DIR)/html, any
# warning (an undocumented public entity included) an error. The version is CMakeLists.txt's.
DOCS_DIR ?= $(BUILD_DIR)/docs
TESSERA_VERSION = $(shell grep -oE '^project.tessera VERSION [0-9.]+' CMakeLists.txt | grep -oE '[0-9.]+$$')
docs:
	@scripts/bootstrap --docs >/dev/null
	@mkdir -p $(DOCS_DIR)
	TESSERA_DOCS_DIR=$(DOCS_DIR) TESSERA_VERSION=$(TESSERA_VERSION) doxygen docs/Doxyfile
	@echo "API reference: $(DOCS_DIR)/html/index.html"

format:
	@files=$$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh'); \
	  [ -z "$$files" ] || clang-format -i $$files

clean:
	rm -rf $(BUILD_DIR)
