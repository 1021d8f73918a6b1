# skiff build. Every target works on a fresh Debian machine with Go and a
# running Docker engine; deploy/install-deps installs the rest.

GO      ?= go
# The version the binaries report (skiff version, --version): the nearest tag,
# with the commits since it, the commit and -dirty when the tree is not that
# tag's (v0.3.0, v0.3.0-4-gabc1234-dirty). Without git, or outside a clone,
# nothing is stamped and the binaries fall back to what the go command
# recorded, else "dev" (package version). `make VERSION=v0.3.0` overrides it.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS := -s -w $(if $(VERSION),-X github.com/skiffhq/skiff/version.Version=$(VERSION))
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'

# Pinned code generators: make generate reproduces proto/*.pb.go byte for byte
# only with these exact versions and Debian's protoc.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOOLS := $(CURDIR)/bin/tools

.PHONY: all deps build images generate test test-unit test-e2e bench bench-scale lint clean demo install

all: build

build:
	$(GOBUILD) -o bin/skiff ./cmd/skiff
	$(GOBUILD) -o bin/skiff-manager ./cmd/manager
	$(GOBUILD) -o bin/skiff-agent ./cmd/agent

# Puts bin/ (make build first: install builds nothing, so that it can run as
# root without Go) in PREFIX/bin, the systemd units in UNITDIR, and the
# environment files in SYSCONFDIR/skiff where none exist; DESTDIR stages it
# all. See deploy/install and docs/install.md.
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= /etc/systemd/system

install:
	DESTDIR='$(DESTDIR)' PREFIX='$(PREFIX)' SYSCONFDIR='$(SYSCONFDIR)' UNITDIR='$(UNITDIR)' deploy/install

# Test images (skiff-test/*) as docker-save tarballs in bin/images.
images:
	testdata/images/build

generate:
	deploy/install-deps protoc
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(TOOLS):$$PATH protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/skiff.proto

# Debian packages the tests need (iproute2, redis-server, ...); a no-op when
# they are installed.
deps:
	deploy/install-deps

test: deps test-unit test-e2e

test-unit:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'TestLeaderChangesMoveNothing' ./manager/
	cd testdata/images && $(GO) test -count=1 ./...

# End-to-end tests drive deploy/testbed: they need root, iproute2 and dockerd.
# The suite runs on stock engines (the testbed's default: docker0, iptables,
# FORWARD DROP), and the tutorial journey once more on bare ones.
test-e2e: build images
	$(GO) test -tags e2e -count=1 -p 1 -timeout 40m -v ./e2e/...
	SKIFF_TESTBED_ENGINE=bare $(GO) test -tags e2e -count=1 -p 1 -timeout 10m -v -run 'TestTutorialJourney' ./e2e/

bench: deps build images
	bench/run

# The scale benchmark without Docker: three managers and thousands of
# simulated agents (bin/skiff-sim) on this machine, 100,000 and then
# 1,000,000 tasks. It takes minutes, every CPU and ~14 GiB of memory;
# make bench runs it too, after the testbed suite.
bench-scale: build
	bench/run scale

# The tutorial on a 3-host testbed: prints the URL to curl.
demo: deps build images
	deploy/demo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	cd testdata/images && $(GO) vet ./...

clean:
	rm -rf bin
