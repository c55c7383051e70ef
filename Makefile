# The commands of the README: `make demo` runs a whole hierarchy with
# simulated devices, `make run` starts one node on the embedded store,
# `make test` runs every test. .ci/run calls `make test`. `make packages`
# and `make images` build the .deb/.rpm packages and the OCI images into
# dist/ (docs/deploy.md).

GO       ?= go
RUN_DIR  ?= .strata
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: demo run build console test test-chart test-deps vet fmt-check fuzz bench clean dist-bin packages images

# The operator console (node/console/web) is built by npm into
# node/console/build/app, which the binary embeds; a target rebuilds it
# only when its sources are newer. `go build` alone embeds no console (its
# / says how to build one).
WEB         := node/console/web
CONSOLE_OUT := node/console/build/app/index.html
WEB_SRC     := $(shell find $(WEB)/src -type f 2>/dev/null) $(WEB)/index.html $(WEB)/build.mjs $(WEB)/tsconfig.json $(WEB)/favicon.svg

console: $(CONSOLE_OUT)

$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund

$(CONSOLE_OUT): $(WEB)/node_modules/.package-lock.json $(WEB_SRC)
	cd $(WEB) && npm run build

build: console
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/strata ./node/cmd/strata
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/strata-agent ./probes/agent/cmd/strata-agent
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/strata-sim ./probes/sim/cmd/strata-sim

# HQ, a regional node, two probes and a reporting node in one process, with
# simulated devices; prints the console URL and login; Ctrl-C stops it.
# DEMO_FLAGS: e.g. --dir .strata-demo (kept between runs) --devices 1000.
DEMO_FLAGS ?=
demo: build
	./bin/strata demo $(DEMO_FLAGS)

# A single node on Badger, initialised on first run (config, TLS, admin token
# in $(RUN_DIR)); log in with the token in $(RUN_DIR)/admin.token.
run: build
	@test -f $(RUN_DIR)/strata.yaml || ./bin/strata init --dir $(RUN_DIR) --name hq --mqtt-addr 127.0.0.1:8883 --federation-addr 127.0.0.1:7443
	./bin/strata serve --config $(RUN_DIR)/strata.yaml

# deploy/build is a module of its own (nfpm and go-containerregistry stay
# out of the main module's dependencies): its tests run here too, without
# -race (they build, install and run packages and images) and one package
# at a time (each builds the static binaries: the second finds them in
# the build cache).
test: fmt-check vet console test-chart
	$(GO) test -race -timeout 15m ./...
	cd deploy/build && $(GO) test -p 1 -timeout 10m ./...

# The Helm chart's tests: a module of their own (deploy/helm/go.mod), so
# that the main module does not depend on Helm and Kubernetes' API
# modules. They render deploy/helm/strata and decode every object; no
# cluster needed. Their first build takes about 4 minutes on 2 cores.
test-chart:
	cd deploy/helm && $(GO) vet ./... && $(GO) test -timeout 10m ./...

# What the tests need beyond Go: PostgreSQL server binaries, mosquitto, chromium (apt-get, once).
test-deps:
	scripts/install-test-deps.sh

vet:
	$(GO) vet ./...
	cd deploy/build && $(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Short runs of every fuzz target (FUZZTIME each).
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	  done; \
	done

# The figures in docs/benchmarks.md.
bench:
	$(GO) test ./node/store -run XXX -bench Durable -benchtime 300000x -count 3
	$(GO) run ./tests/bench/getlatency -contexts 1000000
	$(GO) run ./tests/bench/getlatency -contexts 100000 -devices 1000 -device-rate 20000 -baseline=false
	$(GO) run ./tests/bench/storm -devices 15000 -sources 1 -timeout 180s
	$(GO) run ./tests/bench/bulkjob -devices 100000 -probes 6 -idle 10s -timeout 10m -nice 10
	$(GO) run ./tests/bench/download -devices 1000 -size 50MB -rounds 2
	$(GO) run ./tests/bench/history -devices 1000 -vars 10 -samples 120 -reads 200
	$(GO) run ./tests/bench/distrib -size 200000000 -probes 4 -rounds 2

# Release artifacts, from static binaries (CGO_ENABLED=0) for linux/PKG_ARCH
# with the console embedded: dist/packages/*.deb, *.rpm (strata,
# strata-agent: nfpm) and dist/images/{strata,strata-agent} (OCI image
# layouts: go-containerregistry, no container daemon). The files are stamped
# with the last commit's time (SOURCE_DATE_EPOCH), so a build is repeatable.
DIST     ?= dist
PKG_ARCH ?= $(shell $(GO) env GOARCH)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
DIST_ABS := $(abspath $(DIST))

dist-bin: console
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(DIST_ABS)/bin/strata ./node/cmd/strata
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(DIST_ABS)/bin/strata-agent ./probes/agent/cmd/strata-agent

packages: dist-bin
	cd deploy/build && $(GO) run ./cmd/strata-build packages --root $(CURDIR) --bin-dir $(DIST_ABS)/bin \
		--out $(DIST_ABS)/packages --version $(VERSION) --arch $(PKG_ARCH)

images: dist-bin
	cd deploy/build && $(GO) run ./cmd/strata-build images --bin-dir $(DIST_ABS)/bin \
		--out $(DIST_ABS)/images --version $(VERSION) --revision "$(COMMIT)" --arch $(PKG_ARCH)

clean:
	rm -rf bin dist node/console/build/app
