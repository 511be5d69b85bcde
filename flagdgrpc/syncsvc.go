package flagdgrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	syncv1 "github.com/pennon-dev/pennon/flagdgrpc/gen/flagd/sync/v1"
)

// syncService is flagd.sync.v1.FlagSyncService: in-process providers get
// the whole flag set in flagd's JSON format and evaluate it themselves.
// pennon serves one flag set per sidecar, so the selector (request field or
// Flagd-Selector header) is accepted and ignored.
type syncService struct {
	syncv1.UnimplementedFlagSyncServiceServer
	s *Server
}

func notReady() error {
	return status.Error(codes.Unavailable, "no flag set loaded yet (or its document is not available to the sync service); retry shortly")
}

// SyncFlags sends the whole flag set on connect and again for every new
// flag set whose flagd form differs from the last one sent, until the
// client goes away or the server stops. sync_context carries the flag-set
// metadata, as flagd sends it.
func (y *syncService) SyncFlags(_ *syncv1.SyncFlagsRequest, stream grpc.ServerStreamingServer[syncv1.SyncFlagsResponse]) error {
	s := y.s
	st := s.current()
	var sent []byte
	for {
		if st != nil && st.set != nil && string(st.set.json) != string(sent) {
			resp := &syncv1.SyncFlagsResponse{FlagConfiguration: string(st.set.json), SyncContext: emptyStruct}
			if len(st.set.metadata) > 0 {
				if m, err := toStruct(st.set.metadata); err == nil {
					resp.SyncContext = m
				}
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent = st.set.json
		}
		if st == nil {
			return notReady()
		}
		select {
		case <-st.changed:
			st = s.current()
		case <-stream.Context().Done():
			return nil
		case <-s.stop:
			return nil
		}
	}
}

// FetchAllFlags returns the current flag set in flagd's format.
func (y *syncService) FetchAllFlags(context.Context, *syncv1.FetchAllFlagsRequest) (*syncv1.FetchAllFlagsResponse, error) {
	st := y.s.current()
	if st == nil || st.set == nil {
		return nil, notReady()
	}
	return &syncv1.FetchAllFlagsResponse{FlagConfiguration: string(st.set.json)}, nil
}

// GetMetadata (deprecated in flagd) returns the flag-set metadata plus the
// served version and source.
func (y *syncService) GetMetadata(context.Context, *syncv1.GetMetadataRequest) (*syncv1.GetMetadataResponse, error) {
	st := y.s.current()
	if st == nil || st.snap == nil {
		return nil, notReady()
	}
	m := map[string]any{}
	if st.set != nil {
		for k, v := range st.set.metadata {
			m[k] = v
		}
	}
	m["pennonVersion"] = formatInt(st.snap.Version())
	if y.s.o.SourceName != "" {
		m["pennonSource"] = y.s.o.SourceName
	}
	md, err := toStruct(m)
	if err != nil {
		return nil, status.Error(codes.Internal, "flag-set metadata cannot be encoded: "+err.Error())
	}
	return &syncv1.GetMetadataResponse{Metadata: md}, nil
}
