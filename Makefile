# The two commands README promises. Both do their own set-up.
.PHONY: sample test bench

sample:
	./scripts/setup.sh
	cargo run --quiet -- process samples/batch --out out/sample

test:
	./scripts/setup.sh --broker
	cargo test --workspace

bench:
	./scripts/setup.sh --broker
	cargo bench --bench transport
