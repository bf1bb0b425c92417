# Tessera's entry points. Each bootstraps (installs what is missing), configures and builds
# into build/ with ccache, then does its job.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
ifeq ($(CI),true)
  CMAKE_ARGS += -DTESSERA_WERROR=ON
endif

.PHONY: all bootstrap configure build demo test bench format clean

all: build

bootstrap:
	@scripts/bootstrap >/dev/null

configure: bootstrap
	@if [ ! -f $(BUILD_DIR)/CMakeCache.txt ]; then \
	  cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS); \
	fi

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	$(BUILD_DIR)/bin/tessera demo --out out/demo

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	@mkdir -p $(BUILD_DIR)/bench
	@set -e; for b in $(BUILD_DIR)/bench/*_bench; do \
	  [ -x "$$b" ] || continue; echo "== $$b"; "$$b" --out $(BUILD_DIR)/bench; done

format:
	@files=$$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh'); \
	  [ -z "$$files" ] || clang-format -i $$files

clean:
	rm -rf $(BUILD_DIR)
