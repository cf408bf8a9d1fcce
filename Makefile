# The two commands README promises. Both do their own set-up.
.PHONY: sample test bench eval

# Tesseract's OpenMP threads fight over 2 cores: one thread per engine is about 10x faster here.
export OMP_THREAD_LIMIT = 1

sample:
	./scripts/setup.sh
	cargo run --quiet -- process samples/batch --out out/sample --case sample --batch sample
	cargo run --quiet -- store import out/sample

test:
	./scripts/setup.sh --broker
	cargo test --workspace

bench:
	./scripts/setup.sh --broker
	cargo bench --bench transport
	cargo bench --bench language
	./bench/ocr.sh

# Accuracy figures quoted in README: language identification on the Tatoeba sample, ROUGE of the
# extractive summarizer against LEAD-3 on the CNN/DailyMail sample.
eval:
	./scripts/setup.sh
	cargo run --release -q -p docpipe-models --example langid_eval -- var/models/lid.176.ftz tests/data/langid/tatoeba-sample.tsv
	cargo run --release -q -p docpipe-models --example summarization_eval -- tests/data/summarization/set.jsonl
