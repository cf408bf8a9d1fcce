# The two commands README promises. Both do their own set-up.
.PHONY: sample test bench eval

# Tesseract's OpenMP threads fight over 2 cores: one thread per engine is about 10x faster here.
export OMP_THREAD_LIMIT = 1

# The sample is signed with a key made on first use (var/keys) and checked as a receiving
# authority would check it.
sample:
	./scripts/setup.sh
	test -f var/keys/signing.key || cargo run --quiet -- keys generate --out var/keys
	DOCPIPE_SIGNING__KEY_FILE=var/keys/signing.key cargo run --quiet -- process samples/batch --out out/sample --case sample --batch sample
	cargo run --quiet -- verify out/sample/results.jsonl --keys var/keys/signing.pub --originals samples/batch
	cargo run --quiet -- store import out/sample

test:
	./scripts/setup.sh --broker
	cargo test --workspace

bench:
	./scripts/setup.sh --broker
	cargo bench --bench transport
	cargo bench --bench language
	cargo bench --bench evidence --profile dev
	./bench/ocr.sh

# Accuracy figures quoted in README: language identification on the Tatoeba sample, ROUGE of the
# extractive summarizer against LEAD-3 on the CNN/DailyMail sample.
eval:
	./scripts/setup.sh
	cargo run --release -q -p docpipe-models --example langid_eval -- var/models/lid.176.ftz tests/data/langid/tatoeba-sample.tsv
	cargo run --release -q -p docpipe-models --example summarization_eval -- tests/data/summarization/set.jsonl
