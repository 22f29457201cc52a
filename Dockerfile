# walplayer: both binaries (walplayer, walplayer-agent) in a small image that
# runs as a non-root user. Build from the repository root:
#
#   docker build -t ghcr.io/walplayer/walplayer:latest .

# --- build: cargo alone. protox compiles the protos in build.rs (no protoc);
# ring needs a C compiler, which the rust image has.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

# --- run: Debian slim plus CA certificates. Slim rather than distroless so
# that `kubectl cp` (which needs tar in the container) can load WAL into an
# agent's /data for `--source dir` runs.
FROM debian:bookworm-slim
# ca-certificates is left unpinned: a pinned Debian version string breaks the
# build at the next point release, and the base image tag already fixes the
# distribution.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/walplayer /src/target/release/walplayer-agent /usr/local/bin/
# 65532 is the usual "nonroot" id; the manifests run as the same numbers.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/walplayer"]
