# The two commands: `make run` and `make test`. Everything else is a helper of those.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
MAKEFLAGS  += --no-print-directory

.PHONY: run test test-deploy image build build-asan bench format lint clean deps

run: deps build
	./$(BUILD)/microshop run

test:
	bash scripts/bootstrap.sh test
	bash tests/run.sh

# the images and the compose stack on a private Docker engine (root; see tests/deploy/run.sh)
test-deploy:
	bash scripts/bootstrap.sh deploy && bash tests/deploy/run.sh build/test-results

# the images alone, with the Docker engine DOCKER_HOST names (root when the base is missing)
image:
	bash scripts/bootstrap.sh deploy && bash deploy/docker/build.sh

deps:
	bash scripts/bootstrap.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS) | grep -v '^\[' || true

build-asan:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMS_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

bench:
	bash scripts/bootstrap.sh bench
	bash bench/http.sh
	bash bench/orders.sh
	bash bench/checkout.sh
	bash bench/gateway.sh
	bash bench/observability.sh
	bash bench/console.sh
	bash bench/eventstore.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

lint:
	bash scripts/lint.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
