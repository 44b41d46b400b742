# syntax=docker/dockerfile:1.7
# The one `intake` image: every role (`receiver`, `worker`, `sync`, `all`) and every operator
# command (`migrate`, `status`, `dead-letters`, …) is a subcommand of the same binary.
#
#   docker build -t intake .
#   docker run --rm intake --help
#
# Build stage: BuildKit cache mounts keep the cargo registry and the target directory between
# builds, so a change to our code recompiles our crates only, not the ~300 dependencies.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p intake --bin intake \
 && install -D -m 0755 target/release/intake /out/intake

# Runtime: slim Debian of the same release as the build (same glibc), CA certificates for TLS to
# HealthSherpa and amqps, and nothing else — no shell tools are needed: the healthcheck is the
# binary itself.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 intake \
 && useradd --system --uid 10001 --gid intake --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin intake
COPY --from=build /out/intake /usr/local/bin/intake
COPY config/endpoints.example.toml /etc/intake/endpoints.example.toml
USER 10001:10001
ENV INTAKE_LOG_FORMAT=json \
    RUST_LOG=info
# 8080: receiver (webhooks + ops); 9091: worker ops; 9092: sync ops.
EXPOSE 8080 9091 9092
ENTRYPOINT ["/usr/local/bin/intake"]
CMD ["all"]
# The default role's port. Compose and Kubernetes set their own check per role (worker 9091,
# sync 9092) on /readyz; this one only fits `receiver` and `all`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/intake", "healthcheck", "http://127.0.0.1:8080/readyz"]
