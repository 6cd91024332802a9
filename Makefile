# golvs: Linux Virtual Server in userspace.
GO ?= go
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build demo test vet lint unit race bench-smoke fuzz-smoke bench clean

all: build

build:
	$(GO) build -o golvs ./cmd/golvs

# The NAT lab demo: client, director and two real servers in network
# namespaces, ten requests through the VIP, the table, then clean up.
demo: build
	./golvs lab nat --scheduler rr --requests 10

# Everything CI runs: formatting, vet, go mod tidy, staticcheck, the tests (integration
# tests build their own namespaces; they skip with a reason without root),
# every benchmark once, and a short run of every fuzz target.
test: vet lint unit race bench-smoke fuzz-smoke

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# The other architectures golvs builds for: 64-bit arm, and 32-bit
	@# (where an int has 32 bits: a constant that overflows it fails here).
	GOARCH=arm64 $(GO) vet ./...
	GOARCH=386 $(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy (run go mod tidy):"; $(GO) mod tidy -diff; exit 1; }

lint:
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -count=1 -timeout 20m ./...

# The concurrent packages again under the race detector.
race:
	$(GO) test -count=1 -race -timeout 20m ./conntrack ./director ./control ./trace ./sched ./ipvs ./metrics ./netio ./internal/ratelog ./health ./bgp ./bgp/speaker ./ipvssync ./vrrp

bench-smoke:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime=1x ./...

FUZZTIME ?= 5s
# A target that fails prints why. A real crasher is written to the
# package's testdata/fuzz and fails at once. Go 1.26's fuzz coordinator
# can also fail a target with a bare "context deadline exceeded" just as
# -fuzztime ends, writing nothing (golang/go#75804, fixed in Go 1.27; seen
# in this project's CI on packet's FuzzDecode, and here on about one
# target run in 60): such a failure is printed and the target runs again,
# up to three times in all; each run replays every input it has.
fuzz-smoke:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; \
	    for try in 1 2 3; do \
	      if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1; then break; fi; \
	      tail -n 40 $$log; \
	      if grep -q 'Failing input written to' $$log || ! grep -q 'context deadline exceeded' $$log || [ $$try = 3 ]; then echo "fuzz $$pkg $$f failed"; exit 1; fi; \
	      echo "fuzz $$pkg $$f: the coordinator's deadline race, no failing input; running it again"; \
	    done; \
	  done; done

# Full benchmarks (numbers for the README).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -f golvs
