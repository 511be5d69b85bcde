package config

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // business hours name IANA zones; containers often lack /usr/share/zoneinfo
)

// BusinessHours is when changes to an environment are expected; a change
// committed outside them raises an out_of_hours event (it is not refused).
// Example: {"tz":"Europe/Paris","days":"mon-fri","from":"09:00","to":"18:00"}.
// When From is later than To the window spans midnight and Days name the
// day it starts on.
type BusinessHours struct {
	TZ   string `json:"tz"`
	Days string `json:"days"`
	From string `json:"from"`
	To   string `json:"to"`
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

type hoursWindow struct {
	loc      *time.Location
	days     [7]bool
	from, to int // minutes after midnight
}

// Check refuses hours the control plane could not apply, naming the field
// (under "businessHours.") and the fix.
func (b *BusinessHours) Check() error {
	_, err := b.window()
	return err
}

func (b *BusinessHours) window() (*hoursWindow, error) {
	if b == nil {
		return nil, nil
	}
	w := &hoursWindow{}
	var err error
	if strings.TrimSpace(b.TZ) == "" {
		return nil, fmt.Errorf("businessHours.tz: required, an IANA time zone such as Europe/Paris or UTC")
	}
	if w.loc, err = time.LoadLocation(b.TZ); err != nil {
		return nil, fmt.Errorf("businessHours.tz: %q is not an IANA time zone (e.g. Europe/Paris, America/New_York, UTC)", b.TZ)
	}
	if err := w.parseDays(b.Days); err != nil {
		return nil, err
	}
	if w.from, err = minutesOf(b.From); err != nil {
		return nil, fmt.Errorf("businessHours.from: %v", err)
	}
	if w.to, err = minutesOf(b.To); err != nil {
		return nil, fmt.Errorf("businessHours.to: %v", err)
	}
	if w.from == w.to {
		return nil, fmt.Errorf("businessHours.to: equals from (%s); a window needs two different times", b.From)
	}
	return w, nil
}

// parseDays reads "mon-fri", "mon,wed,fri", "sat-sun" or a mix ("mon-wed,fri").
func (w *hoursWindow) parseDays(s string) error {
	bad := fmt.Errorf("businessHours.days: %q: want day names or ranges such as mon-fri or mon,wed,fri (sun mon tue wed thu fri sat)", s)
	if strings.TrimSpace(s) == "" {
		return bad
	}
	for part := range strings.SplitSeq(strings.ToLower(s), ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(part), "-")
		first, ok1 := weekdays[strings.TrimSpace(a)]
		last, ok2 := first, true
		if isRange {
			last, ok2 = weekdays[strings.TrimSpace(b)]
		}
		if !ok1 || !ok2 {
			return bad
		}
		for d := first; ; d = (d + 1) % 7 {
			w.days[d] = true
			if d == last {
				break
			}
		}
	}
	return nil
}

func minutesOf(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("%q: want HH:MM on a 24-hour clock, e.g. 09:00", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// Contains reports whether t falls inside the business hours; nil or
// invalid hours contain every time (nothing is out of hours).
func (b *BusinessHours) Contains(t time.Time) bool {
	w, err := b.window()
	if w == nil || err != nil {
		return true
	}
	local := t.In(w.loc)
	m := local.Hour()*60 + local.Minute()
	day := local.Weekday()
	if w.from < w.to {
		return w.days[day] && m >= w.from && m < w.to
	}
	// Spans midnight: the evening part belongs to today, the morning part
	// to the day before.
	return (w.days[day] && m >= w.from) || (w.days[(day+6)%7] && m < w.to)
}
