# tre: one binary (API, workers, CLI) in a small non-root runtime image.
#
#   docker build -t tre .
#   docker compose up -d --scale worker-dispense=4     (see docker-compose.yml)
#
# The build runs the same cargo command as the release build that the tests
# and benchmarks use (`cargo build --release --locked --bin tre`); the
# toolchain is the workspace's rust-version.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# dependencies first, so a source change does not rebuild them
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY workers workers
COPY workflows workflows
COPY tests tests
COPY fixtures fixtures
RUN cargo build --release --locked --bin tre \
 && cp target/release/tre /usr/local/bin/tre \
 && strip /usr/local/bin/tre

FROM debian:bookworm-slim AS runtime
# CA certificates for S3 and webhooks over TLS; curl for health checks
# (docker-compose.yml asks /readyz of the API and of each worker)
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tre --create-home tre
COPY --from=build /usr/local/bin/tre /usr/local/bin/tre
USER tre
WORKDIR /var/lib/tre
ENV TRE_LOG=info
EXPOSE 8080 9100
# the API by default; workers run `tre worker --pools ...`
ENTRYPOINT ["tre"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
