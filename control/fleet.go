package control

import (
	"encoding/json"
	"net/http"

	"github.com/pennon-dev/pennon/config"
)

// SidecarRecorder accepts reports that reached the control plane over HTTP
// (the registry in package sync implements it next to SidecarLister).
type SidecarRecorder interface {
	Record(rep config.SidecarReport, via string) bool
}

// maxReportHeader bounds the report header a poll may carry.
const maxReportHeader = 2 << 10

// notePoll records the report a polling sidecar sends with its snapshot
// request. The request is authenticated with a token that has a role in
// env, and the report is forced to that environment, so a token for one
// environment cannot place sidecars in another.
func (s *Server) notePoll(r *http.Request, env string) {
	h := r.Header.Get(config.SidecarReportHeader)
	rec, ok := s.o.Sidecars.(SidecarRecorder)
	if h == "" || len(h) > maxReportHeader || !ok {
		return
	}
	var rep config.SidecarReport
	if json.Unmarshal([]byte(h), &rep) != nil {
		return
	}
	rep.Env = env
	rec.Record(rep, "http")
}
