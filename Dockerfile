# syntax=docker/dockerfile:1
# One image per service, all from this file:
#
#   docker build --build-arg SERVICE=order-service -t shop/order-service:dev .
#
# SERVICE is one of order-service, inventory-service, payment-service, notification-service
# (the cargo packages, and binaries, of the same names under services/). docker-compose.yml
# builds all four. The image runs `<service>` (serve) by default; `migrate` as its only argument
# creates or upgrades the service's database and exits (the Kubernetes init container).
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder (dependencies
# cooked once for the whole workspace, then the one binary) -> runtime (distroless).
# The cook layer depends only on recipe.json (Cargo.toml/Cargo.lock files), not on SERVICE or
# the sources, so it is reused by all four service builds and by every source-only change.
#
# No SQLX_OFFLINE: the code uses no sqlx query macros (query!, query_as!) that would need a
# database or a .sqlx/ cache at build time; sqlx::migrate! only embeds the migrations/ files.
# No protoc either: proto/build.rs compiles the .proto files with protox.

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Every workspace member's dependencies, release profile, as locked.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# Declared after the cook so that the cached dependency layer is shared by every service.
ARG SERVICE=order-service
RUN cargo build --release --locked --package "${SERVICE}" --bin "${SERVICE}" \
    && install -D --mode=0755 "target/release/${SERVICE}" /out/service

# glibc + libgcc + libssl3 + CA certificates + tzdata, no shell, no package manager; uid 65532.
# rdkafka is built with libz-static (Cargo.toml), so the binary needs no zlib from this image, and
# with OpenSSL (TLS and SASL/SCRAM to the brokers), linked against this image's libssl3 (the
# builder's libssl-dev is the same Debian 12 OpenSSL 3.0). Kubernetes
# probes are native gRPC health checks, so nothing needs a shell here.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE=order-service
LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.description="shop suite: ${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed path, so the entrypoint (which cannot expand build arguments) is the same for all four.
COPY --from=builder /out/service /usr/local/bin/service
USER 65532:65532
# gRPC on <SVC>_GRPC_ADDR (50051-50054), Prometheus /metrics on <SVC>_METRICS_ADDR (9101-9104);
# which pair depends on SERVICE, see services/<name>/src/config.rs.
ENTRYPOINT ["/usr/local/bin/service"]
