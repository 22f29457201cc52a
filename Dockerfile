# walplayer: both binaries (walplayer, walplayer-agent) in a small image that
# runs as a non-root user. Build from the repository root:
#
#   docker build -t ghcr.io/walplayer/walplayer:latest .
#
# Two build arguments let the same runtime stage, the only definition of
# what the image holds, be built without a registry (tests/container does):
#   RUNTIME_BASE  the Debian image the runtime stage starts from
#   BINARIES      where the binaries come from: the build stage below
#                 (default), or an image holding already built ones at
#                 /src/target/release/

ARG RUNTIME_BASE=debian:bookworm-slim
ARG BINARIES=build

# --- build: cargo alone. protox compiles the protos in build.rs (no protoc);
# ring needs a C compiler, which the rust image has.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

# --- the binaries, from the stage or image that BINARIES names. A builder
# only builds the build stage when BINARIES names it.
FROM ${BINARIES} AS binaries

# --- run: Debian slim plus CA certificates. Slim rather than distroless so
# that `kubectl cp` (which needs tar in the container) can load WAL into an
# agent's /data for `--source dir` runs.
FROM ${RUNTIME_BASE}
# ca-certificates is left unpinned: a pinned Debian version string breaks the
# build at the next point release, and the base image tag already fixes the
# distribution.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=binaries /src/target/release/walplayer /src/target/release/walplayer-agent /usr/local/bin/
# 65532 is the usual "nonroot" id; the manifests run as the same numbers.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/walplayer"]
