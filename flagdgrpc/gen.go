package flagdgrpc

// The generated code under gen/ is committed so a clone builds without
// protoc. To regenerate after changing a .proto (needs protoc on PATH; the
// plugins are pinned as tools in go.mod and built by `go tool -n`). The
// connect-go handlers serve the gRPC, gRPC-Web and Connect protocols on one
// port, as flagd does: flagd's Go provider speaks Connect over HTTP/1.1,
// the others gRPC over HTTP/2.
//
//go:generate sh -c "protoc -I proto --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --plugin=protoc-gen-connect-go=$(go tool -n protoc-gen-connect-go) --go_out=gen --go_opt=paths=source_relative '--go_opt=Mflagd/evaluation/v1/evaluation.proto=github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1;evaluationv1' '--go_opt=Mflagd/sync/v1/sync.proto=github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1;syncv1' --go-grpc_out=gen --go-grpc_opt=paths=source_relative '--go-grpc_opt=Mflagd/evaluation/v1/evaluation.proto=github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1;evaluationv1' '--go-grpc_opt=Mflagd/sync/v1/sync.proto=github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1;syncv1' --connect-go_out=gen --connect-go_opt=paths=source_relative '--connect-go_opt=Mflagd/evaluation/v1/evaluation.proto=github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1;evaluationv1' '--connect-go_opt=Mflagd/sync/v1/sync.proto=github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1;syncv1' flagd/evaluation/v1/evaluation.proto flagd/sync/v1/sync.proto"
