# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench offline-installer clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: venv
	bash examples/demo.sh

test: venv
	$(BIN)/pytest

# Performance against openssl, model_signing, skopeo, raw onnxruntime and (packager serve)
# MLServer and an echo server under wrk (apt-get install wrk), measured side by side on this
# machine: several GiB of fixtures in a temporary directory, about 15 minutes; MLServer is
# installed once into a virtual environment of its own under ~/.cache/packager-bench.
# Writes BENCHMARKS.md and the README's figures. Not part of `make test`.
bench: venv
	$(BIN)/python benchmarks/run_all.py --write BENCHMARKS.md --readme README.md

# One archive that installs packager (instance side) with no network: wheels for a target
# Python and platform plus install.sh. Default target: this machine. Needs an index to build.
#   make offline-installer PYTHON_VERSION=3.11 PLATFORM=manylinux_2_28_x86_64
PYTHON_VERSION ?=
PLATFORM ?=
offline-installer: venv
	$(BIN)/python tools/offline_installer.py -o dist \
		$(if $(PYTHON_VERSION),--python-version $(PYTHON_VERSION)) \
		$(foreach p,$(PLATFORM),--platform $(p))

lint: venv
	$(BIN)/ruff check packager tests benchmarks examples tools
	$(BIN)/ruff format --check packager tests benchmarks examples tools
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) demo dist .pytest_cache .mypy_cache .ruff_cache
