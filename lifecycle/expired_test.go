package lifecycle

import (
	"encoding/json"
	"testing"

	"github.com/pennon-dev/pennon/config"
)

func TestCheckExpired(t *testing.T) {
	doc, err := config.Parse([]byte(`{"flags":{
 "gone":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","expires":"2026-11-01"},
 "live":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on","expires":"2027-06-30"},
 "plain":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	put := func(flag, expires string) config.Change {
		def := `{"state":"DISABLED","variants":{"on":true},"defaultVariant":"on"`
		if expires != "" {
			def += `,"expires":"` + expires + `"`
		}
		return config.Change{Flag: flag, Op: config.OpPut, Definition: json.RawMessage(def + "}")}
	}
	cases := []struct {
		name   string
		change config.Change
		want   string // the message, "" when the change is not affected
	}{
		{"change to an expired flag", put("gone", "2026-11-01"), `flag "gone" expired on 2026-11-01: extend expires past now (e.g. "2026-12-29") in the same change, or delete the flag`},
		{"dropping expires does not extend it", put("gone", ""), `flag "gone" expired on 2026-11-01: extend expires past now (e.g. "2026-12-29") in the same change, or delete the flag`},
		{"extending an expired flag", put("gone", "2026-12-31"), ""},
		{"extending to a date still past", put("gone", "2026-11-20"), `flag "gone" expired on 2026-11-01: extend expires past now (e.g. "2026-12-29") in the same change, or delete the flag`},
		{"deleting an expired flag", config.Change{Flag: "gone", Op: config.OpDelete}, ""},
		{"change to a live flag", put("live", "2027-06-30"), ""},
		{"writing a live flag expired", put("live", "2026-01-01"), `flag "live" would be written already expired (expires 2026-01-01): set expires after now (e.g. "2026-12-29")`},
		{"new flag already expired", put("new", "2025-12-31T23:00:00Z"), `flag "new" would be written already expired (expires 2025-12-31T23:00:00Z): set expires after now (e.g. "2026-12-29")`},
		{"new flag without expiry", put("new", ""), ""},
		{"flag without expiry", put("plain", ""), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckExpired(doc, []config.Change{{Flag: "other", Op: config.OpDelete}, tc.change}, now)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("got %+v, want nothing", got)
				}
				return
			}
			if len(got) != 1 || got[0].Message != tc.want || got[0].Index != 1 || got[0].Path != "changes[1].definition.expires" || got[0].Flag != tc.change.Flag {
				t.Fatalf("got %+v\nwant index 1, path changes[1].definition.expires, message %s", got, tc.want)
			}
		})
	}
}
