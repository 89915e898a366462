# The README's two commands: `make demo` and `make test`. Both install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages nerfstudio's own commands need on a bare machine: open3d (imported by ns-export)
# needs libusb, ns-render needs an ffmpeg binary.
APT_PACKAGES := libusb-1.0-0 ffmpeg chromium
DEMO_OUT ?= outputs/demo

.PHONY: install sysdeps test test-fast demo clean

install: $(STAMP) sysdeps

# requirements.lock pins the whole resolved set (pip would otherwise backtrack for minutes).
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || { echo "could not install$$missing: ns-export / ns-render need them (apt-get install$$missing)"; exit 1; }; \
	  else \
	    echo "warning: missing Debian packages:$$missing. Ask an admin to run: sudo apt-get install$$missing" \
	         "(ns-export needs libusb-1.0-0, ns-render needs ffmpeg)"; \
	  fi; \
	fi

test: install
	$(VENV)/bin/pytest -q -n 2  # two workers: most slow tests wait on ns-* subprocesses

test-fast: install
	$(VENV)/bin/pytest -q -n 2 -m "not slow"

demo: install
	$(PY) -m pensieve_ns.demo --pretrained pretrained --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) outputs
