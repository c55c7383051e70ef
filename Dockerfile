# The container images of strata and strata-agent, for those who build with
# Docker (docs/deploy.md):
#   docker build --target strata --build-arg VERSION=v1.2.3 -t strata:v1.2.3 .
#   docker build --target strata-agent --build-arg VERSION=v1.2.3 -t strata-agent:v1.2.3 .
# make images builds the same images without a daemon (deploy/build/images);
# a test there holds this file to the same user, entrypoint, command and
# ports.
ARG GO_VERSION=1.26

# The operator console, embedded in the strata binary.
FROM node:22-bookworm AS console
WORKDIR /src/node/console/web
COPY node/console/web/package.json node/console/web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY node/console/web/ ./
RUN npm run build

# Static binaries (CGO_ENABLED=0): they need no libc in the image.
FROM golang:${GO_VERSION}-bookworm AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=console /src/node/console/build/app node/console/build/app
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/strata ./node/cmd/strata && \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/strata-agent ./probes/agent/cmd/strata-agent && \
    mkdir -p /out/state

# distroless/static: CA certificates, /etc/passwd with the user 65532, /tmp.
FROM gcr.io/distroless/static-debian12:nonroot AS strata
ARG VERSION=dev
COPY --from=build /out/strata /usr/bin/strata
COPY --from=build --chown=65532:65532 --chmod=0700 /out/state /var/lib/strata
LABEL org.opencontainers.image.title="strata" \
      org.opencontainers.image.description="Strata device management node" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/strata-dm/strata" \
      org.opencontainers.image.vendor="Strata"
USER 65532:65532
WORKDIR /var/lib/strata
VOLUME /var/lib/strata
# HTTPS API, MQTT over TLS, federation (QUIC)
EXPOSE 8443/tcp 8883/tcp 7443/udp
ENTRYPOINT ["/usr/bin/strata"]
CMD ["serve", "--config", "/var/lib/strata/strata.yaml", "--log-format", "json"]

FROM gcr.io/distroless/static-debian12:nonroot AS strata-agent
ARG VERSION=dev
COPY --from=build /out/strata-agent /usr/bin/strata-agent
COPY --from=build --chown=65532:65532 --chmod=0700 /out/state /var/lib/strata-agent
LABEL org.opencontainers.image.title="strata-agent" \
      org.opencontainers.image.description="Strata device agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/strata-dm/strata" \
      org.opencontainers.image.vendor="Strata"
USER 65532:65532
WORKDIR /var/lib/strata-agent
VOLUME /var/lib/strata-agent
ENTRYPOINT ["/usr/bin/strata-agent"]
CMD ["run", "--state", "/var/lib/strata-agent", "--log-format", "json"]
