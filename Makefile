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
fuzz-smoke:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null; \
	  done; done

# Full benchmarks (numbers for the README).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -f golvs
