package flagdgrpc

import (
	"fmt"
	"os"
	"sync"

	"github.com/pennon-dev/pennon/config"
	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/proxy"
)

// DocumentSource is implemented by flag sources that keep the document they
// compiled the current snapshot from. The sync service needs it: in-process
// providers evaluate flagd's JSON themselves, and a compiled snapshot no
// longer holds its rules as JSON.
type DocumentSource interface {
	// CurrentDocument returns the snapshot being served and the document it
	// was compiled from, read together so that they match; nil, nil before
	// the first load.
	CurrentDocument() (*evaluator.Snapshot, *config.Document)
}

// FileDocuments serves the document of a file-backed source by reading the
// same file again whenever the source's snapshot changes. It is for sources
// that do not implement DocumentSource themselves. The file can change
// between the source's read and this one; the synced set is then briefly
// ahead of the sidecar's, and equal again after the source's next reload,
// which triggers a new read here.
type FileDocuments struct {
	src  proxy.Source
	path string

	mu   sync.Mutex
	snap *evaluator.Snapshot
	doc  *config.Document
}

// NewFileDocuments returns a DocumentSource for src, which serves path.
func NewFileDocuments(src proxy.Source, path string) (*FileDocuments, error) {
	if src == nil || path == "" {
		return nil, fmt.Errorf("flagdgrpc: FileDocuments needs a source and the path it serves")
	}
	return &FileDocuments{src: src, path: path}, nil
}

// CurrentDocument implements DocumentSource. A file that cannot be read or
// parsed keeps the previous document (the source rejects it too).
func (f *FileDocuments) CurrentDocument() (*evaluator.Snapshot, *config.Document) {
	snap := f.src.Current()
	f.mu.Lock()
	defer f.mu.Unlock()
	if snap == f.snap && f.doc != nil {
		return snap, f.doc
	}
	data, err := os.ReadFile(f.path)
	if err == nil {
		var doc *config.Document
		if doc, err = config.Parse(data); err == nil {
			f.snap, f.doc = snap, doc
		}
	}
	return snap, f.doc
}
