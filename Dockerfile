# syntax=docker/dockerfile:1
# The production image (the default, last stage `app`) holds api, worker and
# scheduler; docker-compose.yml picks one per service with `command:`. The
# WhatsApp emulator is a test and demo tool and has its own target, so a
# production image never carries a fake WhatsApp server:
#   docker build .                  the services
#   docker build --target waemu .   the emulator alone
#
# Base images are pinned by tag; the policy (docs/SECURITY.md) is to pin
# them by digest where you deploy, so a moved tag cannot change what you
# run: `docker buildx imagetools inspect golang:1.26-bookworm --format
# '{{.Manifest.Digest}}'` prints it (plain `inspect` shows it as Digest:), then
# `FROM golang:1.26-bookworm@sha256:<digest> AS build` (the same for the
# distroless stages and compose's images). Not done in the repository: it
# is built offline, where no digest can be looked up or verified.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Pure Go (pgx, go-redis, whatsmeow): static binaries run on distroless.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/api ./cmd/worker ./cmd/scheduler

FROM build AS build-waemu
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out-waemu/ ./cmd/waemu

# The emulator, for tests and demos only.
FROM gcr.io/distroless/static-debian12:nonroot AS waemu
COPY --from=build-waemu /out-waemu/waemu /usr/local/bin/waemu
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/waemu"]

# distroless/static has CA certificates and tzdata, no shell, and a nonroot
# user (65532).
FROM gcr.io/distroless/static-debian12:nonroot AS app
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
# api: HTTP_ADDR, MONITOR_ADDR; worker: METRICS_ADDR.
EXPOSE 8080 8090 9091
ENTRYPOINT []
CMD ["/usr/local/bin/api"]
