#!/usr/bin/env bash
# Builds llama.cpp from the PyPI source distribution of llama-cpp-python (it vendors llama.cpp and
# builds offline with cmake), into var/llama-cpp-venv. The anchor for docpipe's GGUF decoder:
# bench/llama_anchor.py runs it on the same GGUF file and the same prompt ids.
#
# Built for the CPU it runs on (llama.cpp's default, what `pip install llama-cpp-python` gives a
# user); CMAKE_ARGS=-DGGML_NATIVE=OFF in the environment gives a portable build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=var/llama-cpp-venv
version=0.3.36
if "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
    echo "llama-cpp-python $version is installed in $venv"
    exit 0
fi
python3 -m venv "$venv"
# cmake and ninja from PyPI: nothing from the system but a C++ compiler.
"$venv/bin/pip" install -q --upgrade pip scikit-build-core cmake ninja numpy
export PATH="$PWD/$venv/bin:$PATH"
# About 11 minutes on two cores.
"$venv/bin/pip" install -q --no-binary llama-cpp-python "llama-cpp-python==$version"
"$venv/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
