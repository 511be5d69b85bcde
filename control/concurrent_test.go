package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pennon-dev/pennon/config"
)

// TestConcurrentWritesThroughAPI checks that parallel writers to distinct
// flags each get their own version: the store serialises commits, so no
// write is lost and no version is handed out twice.
func TestConcurrentWritesThroughAPI(t *testing.T) {
	f := setup(t)
	const n = 8
	versions := make([]uint64, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/api/v1/envs/dev/flags/f%d", f.base, i), strings.NewReader(`{"definition":`+flagDef+`}`))
			req.Header.Set("Authorization", "Bearer "+f.tokens["editor"])
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 201 {
				t.Errorf("writer %d: %d %s", i, resp.StatusCode, b)
				return
			}
			var cs config.Changeset
			if err := json.Unmarshal(b, &cs); err != nil {
				t.Error(err)
				return
			}
			versions[i] = cs.Version
		}(i)
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i, v := range versions {
		if v == 0 || seen[v] {
			t.Fatalf("writer %d got version %d (all: %v)", i, v, versions)
		}
		seen[v] = true
	}
	code, body := f.do(t, f.tokens["viewer"], "GET", "/api/v1/envs/dev/flags", "")
	for i := 0; i < n; i++ {
		if code != 200 || !strings.Contains(body, fmt.Sprintf(`"f%d"`, i)) {
			t.Fatalf("flag f%d missing: %d %s", i, code, body)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}
