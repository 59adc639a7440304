# syntax=docker/dockerfile:1
# lark-bridge container image:  docker build -t lark-bridge:dev .
# (.git is not sent to the build, so build.rs reports git_sha "unknown" in
# lark_bridge_build_info.)

# --- build stage ------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# rdkafka-sys compiles its bundled librdkafka from source and links it statically (gcc, make
# and perl are already in this image; cmake is not needed). With rdkafka's `ssl` feature it
# links OpenSSL dynamically (libssl-dev is in this image), and libz likewise (zlib1g-dev).

# Dependency layer: build the dependencies against dummy sources, so that a change to our
# code does not rebuild the ~300 crates (and librdkafka) underneath it.
# The workspace's manifests, and a stub for every target they declare (cargo refuses a
# manifest whose declared targets are missing); only the service package is built.
COPY Cargo.toml Cargo.lock ./
COPY crates/lark-protocol/Cargo.toml crates/lark-protocol/
COPY crates/fake-lark/Cargo.toml crates/fake-lark/
RUN mkdir -p src benches examples/consumers/rust crates/lark-protocol/src crates/fake-lark/src/bin \
 && for f in src/main.rs benches/pure_path.rs examples/consumers/rust/kafka_consumer.rs \
        examples/consumers/rust/nats_consumer.rs crates/fake-lark/src/bin/fake-lark.rs \
        crates/fake-lark/src/bin/lark-load.rs; do echo 'fn main() {}' > "$f"; done \
 && : > src/lib.rs && : > crates/lark-protocol/src/lib.rs && : > crates/fake-lark/src/lib.rs \
 && cargo build --release --locked -p lark-bridge --bin lark-bridge \
 && rm -rf src benches examples crates

# The real sources. `touch` makes cargo rebuild our crate even when COPY kept file times
# older than the dummy build above.
COPY . .
RUN touch src/main.rs src/lib.rs crates/lark-protocol/src/lib.rs \
 && cargo build --release --locked -p lark-bridge --bin lark-bridge \
 && cp target/release/lark-bridge /usr/local/bin/lark-bridge

# --- runtime stage ----------------------------------------------------------------------
FROM debian:bookworm-slim
# Runtime libraries only: ca-certificates, and libssl3 because rdkafka is built with its `ssl`
# feature (Kafka over TLS / SASL_SSL; libssl.so.3 + libcrypto.so.3). librdkafka itself is
# static, the HTTP and NATS clients use rustls, zlib1g is already in the base image. If
# rdkafka's `gssapi`/`sasl` feature is ever turned on, add libsasl2-2 here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lark \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin lark
COPY --from=build /usr/local/bin/lark-bridge /usr/local/bin/lark-bridge
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 8080: Lark webhook (server.listen); 9090: /healthz, /readyz, /metrics (admin.listen).
EXPOSE 8080 9090
ENTRYPOINT ["lark-bridge"]
