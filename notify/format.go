package notify

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Body is what a webhook of format receives for e: the Event as JSON, or
// Slack's {"text": ...} with the title in bold and the details after it.
func Body(format string, e Event) ([]byte, error) {
	if format == FormatSlack {
		return json.Marshal(map[string]string{"text": SlackText(e)})
	}
	return json.Marshal(e)
}

// SlackText renders e as Slack mrkdwn: a severity mark and the title in bold,
// then the text, then one line of context (environment, type, flag, and the
// event's scalar details, sorted).
func SlackText(e Event) string {
	var b strings.Builder
	mark := map[string]string{SeverityCritical: ":rotating_light:", SeverityWarning: ":warning:"}[e.Severity]
	if mark == "" {
		mark = ":information_source:"
	}
	fmt.Fprintf(&b, "%s *%s*", mark, slackEscape(e.Title))
	if e.Text != "" {
		b.WriteString("\n" + slackEscape(e.Text))
	}
	ctx := []string{"env " + e.Env, e.Type}
	if e.Flag != "" {
		ctx = append(ctx, "flag "+e.Flag)
	}
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := e.Data[k].(type) {
		case string:
			if v != "" {
				ctx = append(ctx, k+" "+v)
			}
		case bool, int, int64, uint64, float64, json.Number:
			ctx = append(ctx, fmt.Sprintf("%s %v", k, v))
		}
	}
	b.WriteString("\n_" + slackEscape(strings.Join(ctx, " · ")) + "_")
	return b.String()
}

// slackEscape escapes the three characters Slack's mrkdwn gives meaning to,
// so a flag key or reason cannot forge a link or a mention.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
