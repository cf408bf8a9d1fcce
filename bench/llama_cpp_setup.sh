#!/usr/bin/env bash
# Builds llama.cpp from the PyPI source distribution of llama-cpp-python (it vendors llama.cpp and
# builds offline with cmake), into var/llama-cpp-venv. The anchor for docpipe's GGUF decoder:
# bench/llama_anchor.py runs it on the same GGUF file and the same prompt ids.
#
# Built for the CPU it runs on (llama.cpp's default, what `pip install llama-cpp-python` gives a
# user); CMAKE_ARGS=-DGGML_NATIVE=OFF in the environment gives a portable build instead.
#   bench/llama_cpp_setup.sh [--no-amx | --avx2]
# --no-amx: every x86 extension up to AVX-512 VNNI/BF16 but not AMX, into var/llama-cpp-noamx-venv.
# On a CPU with AMX the native build's AMX weight buffers crashed (segfault after "amx repack
# tensor", both Qwen2.5 models, 0.3.36); that build is what such a site would run instead.
# --avx2: AVX2/FMA/F16C only, into var/llama-cpp-avx2-venv: the anchor for docpipe's AVX2 path
# (DOCPIPE_KERNELS=avx2) on an AVX-512 CPU, what an AVX2-only machine runs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=var/llama-cpp-venv
version=0.3.36
if [ "${1:-}" = --no-amx ]; then
    venv=var/llama-cpp-noamx-venv
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"
elif [ "${1:-}" = --avx2 ]; then
    venv=var/llama-cpp-avx2-venv
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"
fi
if "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
    echo "llama-cpp-python $version is installed in $venv"
    exit 0
fi
python3 -m venv "$venv"
# cmake and ninja from PyPI: nothing from the system but a C++ compiler.
"$venv/bin/pip" install -q --upgrade pip scikit-build-core cmake ninja numpy
export PATH="$PWD/$venv/bin:$PATH"
# About 11 minutes on two cores.
# No wheel cache: a wheel built for the other set of flags would be reused.
"$venv/bin/pip" install -q --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$version"
"$venv/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
