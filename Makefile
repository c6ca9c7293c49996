# RefServer: `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor
# Only for the test suite: a browser for the UI tests, sshd for the SFTP offsite tests,
# Redis for the scale-out queue test, zstd + jq + sqlite3 for the manual-restore page test.
TEST_APT_PACKAGES := chromium openssh-server redis-server zstd jq sqlite3

.PHONY: serve test install system-deps test-system-deps apt-install lint format bench clean-venv

## Create or refresh .venv when pyproject.toml changes (idempotent).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Tesseract (OCR for scanned pages) from the system packages, when missing.
system-deps:
	@$(MAKE) --no-print-directory apt-install PKGS="$(APT_PACKAGES)"

test-system-deps: system-deps
	@$(MAKE) --no-print-directory apt-install PKGS="$(TEST_APT_PACKAGES)"

apt-install:
	@missing=""; \
	for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "WARNING: please install:$$missing"; \
	  fi; \
	fi

serve: install system-deps
	$(BIN)/refserver serve

test: install test-system-deps
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format:
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: install system-deps
	$(BIN)/python bench/ingest.py

clean-venv:
	rm -rf $(VENV)
