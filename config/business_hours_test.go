package config

import (
	"strings"
	"testing"
	"time"
)

func TestBusinessHoursContains(t *testing.T) {
	paris := &BusinessHours{TZ: "Europe/Paris", Days: "mon-fri", From: "09:00", To: "18:00"}
	night := &BusinessHours{TZ: "UTC", Days: "fri,sat", From: "22:00", To: "06:00"}
	wrap := &BusinessHours{TZ: "UTC", Days: "sat-mon", From: "00:00", To: "23:59"}
	at := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	cases := []struct {
		name string
		b    *BusinessHours
		t    string
		want bool
	}{
		{"monday 09:00 Paris (08:00 UTC in winter)", paris, "2026-11-30T08:00:00Z", true},
		{"monday 08:59 Paris", paris, "2026-11-30T07:59:00Z", false},
		{"monday 18:00 Paris is out (to is exclusive)", paris, "2026-11-30T17:00:00Z", false},
		{"friday 17:59 Paris", paris, "2026-12-04T16:59:00Z", true},
		{"saturday noon Paris", paris, "2026-12-05T11:00:00Z", false},
		{"summer time: monday 09:30 Paris is 07:30 UTC", paris, "2026-07-06T07:30:00Z", true},
		{"friday 23:00 in a window spanning midnight", night, "2026-12-04T23:00:00Z", true},
		{"saturday 05:00 belongs to friday's window", night, "2026-12-05T05:00:00Z", true},
		{"sunday 05:00 belongs to saturday's window", night, "2026-12-06T05:00:00Z", true},
		{"monday 05:00: sunday has no window", night, "2026-12-07T05:00:00Z", false},
		{"friday 12:00 is outside the night window", night, "2026-12-04T12:00:00Z", false},
		{"range wrapping the week end (sat-mon) includes sunday", wrap, "2026-12-06T12:00:00Z", true},
		{"range sat-mon excludes wednesday", wrap, "2026-12-02T12:00:00Z", false},
		{"no business hours: never out of hours", nil, "2026-12-05T03:00:00Z", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.Contains(at(tc.t)); got != tc.want {
				t.Errorf("Contains(%s) = %v, want %v", tc.t, got, tc.want)
			}
		})
	}
}

func TestBusinessHoursCheck(t *testing.T) {
	cases := []struct {
		name string
		b    BusinessHours
		want string // prefix of the error; "" for valid
	}{
		{"valid", BusinessHours{TZ: "Europe/Paris", Days: "mon-fri", From: "09:00", To: "18:00"}, ""},
		{"valid list", BusinessHours{TZ: "UTC", Days: "Mon, Wed,fri", From: "07:30", To: "19:45"}, ""},
		{"no tz", BusinessHours{Days: "mon-fri", From: "09:00", To: "18:00"}, "businessHours.tz: required"},
		{"bad tz", BusinessHours{TZ: "Mars/Olympus", Days: "mon-fri", From: "09:00", To: "18:00"}, "businessHours.tz: \"Mars/Olympus\""},
		{"bad day", BusinessHours{TZ: "UTC", Days: "monday-friday", From: "09:00", To: "18:00"}, "businessHours.days:"},
		{"no days", BusinessHours{TZ: "UTC", From: "09:00", To: "18:00"}, "businessHours.days:"},
		{"bad from", BusinessHours{TZ: "UTC", Days: "mon", From: "9am", To: "18:00"}, "businessHours.from:"},
		{"bad to", BusinessHours{TZ: "UTC", Days: "mon", From: "09:00", To: "25:00"}, "businessHours.to:"},
		{"empty window", BusinessHours{TZ: "UTC", Days: "mon", From: "09:00", To: "09:00"}, "businessHours.to: equals from"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.b.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("Check = %v, want %q...", err, tc.want)
			}
		})
	}
}
