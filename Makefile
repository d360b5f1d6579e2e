# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.moakit-installed
# Exact versions (torch 2.14.1 / torchvision 0.29.1 among them): the install is reproducible.
CONSTRAINTS := constraints.txt

.PHONY: install demo test bench wheel constraints clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the build backend too (a new venv has an older setuptools; `make wheel` builds with it)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) setuptools
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moakit demo --out demo-run

# pytest exits 5 when it collected no test: that is a failure here, said out loud.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; fi; \
	exit $$rc

# Every benchmark script (hours on a CPU; each writes bench/out/*.md; see BENCHMARKS.md).
bench: $(STAMP)
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done

# A wheel in dist/, built with the venv's setuptools (no download).
wheel: $(STAMP)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -c $(CONSTRAINTS) -w dist .

# After upgrading packages in the venv (and passing `make test`): record the exact versions.
constraints: $(STAMP)
	{ sed -n '/^#/p' $(CONSTRAINTS); $(PY) -m pip freeze --all --exclude-editable \
	  | grep -v -i -E '^(moakit|pip|wheel|py-spy)=='; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf demo-run .pytest_cache build dist src/*.egg-info
