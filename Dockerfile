# syntax=docker/dockerfile:1
# One image holds all four programs; docker-compose.yml picks one per
# service with `command:`.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Pure Go (pgx, go-redis, whatsmeow): a static binary runs on distroless.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
        ./cmd/api ./cmd/worker ./cmd/scheduler ./cmd/waemu

# distroless/static has CA certificates and tzdata, no shell, and a nonroot
# user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
# api: HTTP_ADDR; worker: METRICS_ADDR.
EXPOSE 8080 9091
ENTRYPOINT []
CMD ["/usr/local/bin/api"]
