# syntax=docker/dockerfile:1
# Multi-stage build: a static pennon binary on a distroless, non-root base.
#   docker build -t pennon .
#   docker run --rm -p 127.0.0.1:8016:8016 pennon sidecar --file /etc/pennon/flags.json --addr 0.0.0.0:8016 --allow-remote
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/pennon ./cmd/pennon

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pennon /usr/local/bin/pennon
COPY examples/ /etc/pennon/examples/
USER nonroot:nonroot
EXPOSE 8016 8017 8080 4222
# distroless has no shell or curl: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD ["/usr/local/bin/pennon", "probe", "--url", "http://127.0.0.1:8016/readyz"]
ENTRYPOINT ["/usr/local/bin/pennon"]
CMD ["sidecar", "--file", "/etc/pennon/examples/checkout.json"]
