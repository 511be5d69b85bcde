package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pennon-dev/pennon/evaluator"
	evalv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/evaluation/v1"
	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
	flagsync "github.com/pennon-dev/pennon/sync"
)

// TestSidecarFlagdServices checks the sidecar's wiring of flagd's gRPC
// services: in file mode both run (the sync service reads the file's
// document), a source without a document runs evaluation only, empty
// addresses disable them, and non-loopback addresses are refused.
func TestSidecarFlagdServices(t *testing.T) {
	const file = "../../examples/checkout.json"
	src, err := flagsync.NewFileSource(flagsync.FileOptions{Path: file})
	if err != nil {
		t.Fatal(err)
	}
	o := sidecarOptions{file: file, grpcAddr: "127.0.0.1:0", syncAddr: "127.0.0.1:0", drain: time.Second}
	g, err := flagdServices(o, src, "file:"+file, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	ec, err := grpc.NewClient(g.EvalAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	r, err := evalv1.NewServiceClient(ec).ResolveBoolean(cctx, &evalv1.ResolveBooleanRequest{FlagKey: "payment-api-v1"})
	if err != nil || !r.GetValue() || r.GetReason() != "STATIC" {
		t.Fatalf("ResolveBoolean: %v %v", r, err)
	}
	sc, err := grpc.NewClient(g.SyncAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	all, err := syncv1.NewFlagSyncServiceClient(sc).FetchAllFlags(cctx, &syncv1.FetchAllFlagsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if js := all.GetFlagConfiguration(); !strings.Contains(js, `"payment-api-v1"`) || strings.Contains(js, `"owner"`) {
		t.Fatalf("synced set: %s", js)
	}

	var h evaluator.Holder
	h.Store(src.Current())
	noDoc, err := flagdServices(sidecarOptions{grpcAddr: "127.0.0.1:0", syncAddr: "127.0.0.1:0"}, &h, "env:x", zap.NewNop(), nil)
	if err != nil || noDoc == nil || noDoc.SyncAddr() != "" || noDoc.EvalAddr() == "" {
		t.Fatalf("source without document: %v, %v", noDoc, err)
	}
	// Listening but never served: Serve with a cancelled context closes it.
	cctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := noDoc.Serve(cctx2); err != nil {
		t.Fatal(err)
	}
	if off, err := flagdServices(sidecarOptions{}, src, "file", zap.NewNop(), nil); off != nil || err != nil {
		t.Fatalf("both addresses empty: %v, %v", off, err)
	}
	if _, err := flagdServices(sidecarOptions{file: file, grpcAddr: "0.0.0.0:8013"}, src, "file", zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("non-loopback: %v", err)
	}
}

// In remote mode the sync service sends what the sidecar serves: the flag
// set from the control plane, then every pushed change.
func TestSidecarFlagdSyncRemoteMode(t *testing.T) {
	d := startDev(t)
	tok, err := readToken(d.data + "/sidecar-token")
	if err != nil {
		t.Fatal(err)
	}
	r, err := flagsync.NewRemote(flagsync.RemoteOptions{Env: "dev", ServerURL: d.api, NATSURL: d.nats, Token: tok, ID: "grpc-remote", PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { defer close(rdone); _ = r.Run(rctx) }()
	defer func() { rcancel(); <-rdone }()
	g, err := flagdServices(sidecarOptions{env: "dev", grpcAddr: "127.0.0.1:0", syncAddr: "127.0.0.1:0", drain: time.Second}, r, "env:dev", zap.NewNop(), nil)
	if err != nil || g == nil || g.SyncAddr() == "" {
		t.Fatalf("remote mode must run the sync service: %v (%v)", err, g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	sc, err := grpc.NewClient(g.SyncAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	stream, err := syncv1.NewFlagSyncServiceClient(sc).SyncFlags(sctx, &syncv1.SyncFlagsRequest{ProviderId: "test"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || !strings.Contains(first.GetFlagConfiguration(), `"performance-mode"`) {
		t.Fatalf("initial sync: %v %v", first, err)
	}
	code, body := post(t, d.api+"/api/v1/envs/dev/flags/performance-mode", d.admin, "PUT",
		`{"baseVersion":1,"reason":"grpc sync test","definition":{"state":"ENABLED","variants":{"fast":"fast","balanced":"balanced","safe":"safe"},"defaultVariant":"safe"}}`)
	if code != 201 {
		t.Fatalf("change: %d %s", code, body)
	}
	for {
		next, err := stream.Recv()
		if err != nil {
			t.Fatalf("no update after the change: %v", err)
		}
		if strings.Contains(next.GetFlagConfiguration(), `"defaultVariant":"safe"`) {
			return
		}
	}
}
