# The two commands README promises. Both do their own set-up.
.PHONY: sample test bench

# Tesseract's OpenMP threads fight over 2 cores: one thread per engine is about 10x faster here.
export OMP_THREAD_LIMIT = 1

sample:
	./scripts/setup.sh
	cargo run --quiet -- process samples/batch --out out/sample

test:
	./scripts/setup.sh --broker
	cargo test --workspace

bench:
	./scripts/setup.sh --broker
	cargo bench --bench transport
	./bench/ocr.sh
