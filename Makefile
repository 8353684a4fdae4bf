# The two commands: `make demo` (build, convert Fashion-MNIST, compare loaders) and `make test`
# (build and run every test: C++ in release, ASan+UBSan and TSan builds, the fuzzer, Python).
# Both install what they need with scripts/install-deps first.
JOBS ?= 2

.PHONY: all deps build demo test bench lint format clean

all: build

deps:
	@bash scripts/install-deps

build: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

demo: build
	@bash scripts/demo

test: deps
	@bash scripts/run-tests

bench: build
	@bash scripts/run-benchmarks

lint: build
	@bash scripts/lint

format:
	@bash scripts/format

clean:
	rm -rf build data
