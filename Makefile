# Starling developer commands. `make verify` runs exactly what CI runs and never modifies the tree.
CARGO ?= cargo
export RUSTFLAGS ?=
export RUSTDOCFLAGS ?= -D warnings

.PHONY: run test verify fmt-check clippy doc bench deps fmt

## Run one dev node: embedded broker, embedded store, dev certificates under ./starling-data.
run:
	$(CARGO) run --release -- dev

## Install what the tests need (Mosquitto), then run every test of the workspace.
test: deps
	$(CARGO) test --workspace

## What CI runs: formatting, lints on every target, tests, docs.
verify: fmt-check clippy test doc

deps:
	./scripts/ensure-test-deps

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	$(CARGO) doc --workspace --no-deps

## Ingest benchmark (release build; starts Mosquitto and a node; see BENCHMARKS.md).
bench: deps
	$(CARGO) build --release --workspace
	STARLING_BIN=$(CURDIR)/target/release/starling $(CARGO) bench --workspace --bench ingest

fmt:
	$(CARGO) fmt --all
