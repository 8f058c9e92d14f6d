# Multi-stage build: a release binary on a small Debian base, running as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin kqlgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin kqlgate
COPY --from=build /src/target/release/kqlgate /usr/local/bin/kqlgate
USER kqlgate
ENV KQLGATE_CONFIG=/etc/kqlgate/kqlgate.toml
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kqlgate"]
CMD ["serve", "--log-format", "json"]
