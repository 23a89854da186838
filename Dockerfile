# syntax=docker/dockerfile:1
#
# One image with the Lucid binaries: lucid-api (default entrypoint),
# lucid-worker, lucid-scheduler and the lucidctl CLI. docker-compose.yml picks
# the entrypoint per service.
#
#   docker build -t lucid-node:local .

FROM rust:1-bookworm AS builder
WORKDIR /src
# sqlx's query!/migrate! macros must not try to reach a database at build
# time: they read the checked-in .sqlx/ data instead.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
# The target dir is a cache mount, so the binaries are copied out in the same
# step (a cache mount is not part of the image layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --workspace \
        --bin lucid-api --bin lucid-worker --bin lucid-scheduler --bin lucidctl \
 && mkdir -p /out \
 && cp target/release/lucid-api target/release/lucid-worker target/release/lucid-scheduler \
       target/release/lucidctl /out/

# glibc + libgcc + CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
ENV LUCID_NODE_API_HOST=0.0.0.0 \
    LUCID_NODE_API_PORT=8095 \
    LUCID_LOG_FORMAT=json
EXPOSE 8095
# No HEALTHCHECK here: it differs per process (compose sets one per service,
# running `lucid-api healthcheck` / `lucid-worker healthcheck`).
ENTRYPOINT ["/usr/local/bin/lucid-api"]
