# Two commands do everything: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint bench clean sysdeps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# System libraries the wheels need (open3d loads libusb). Installed with apt when we are root.
SYSLIBS := libusb-1.0-0
sysdeps:
	@ldconfig -p | grep -q 'libusb-1.0.so.0' || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq $(SYSLIBS) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -qq $(SYSLIBS); }; \
	  else echo "note: open3d needs $(SYSLIBS); run: sudo apt-get install -y $(SYSLIBS)"; fi; }

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python sysdeps
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/v3d demo
	$(BIN)/v3d demo --method det-gs --output outputs/demo-det-gs

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/v3d bench

clean:
	rm -rf $(VENV) outputs .pytest_cache
