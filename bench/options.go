package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// Options describe one load run against one target.
type Options struct {
	// URL is the target's base URL (scheme and host; path ignored), e.g.
	// http://127.0.0.1:8016.
	URL string
	// Scenario chooses flag keys and how contexts are generated.
	Scenario Scenario
	// Connections is the number of concurrent connections (and workers).
	// Default 16.
	Connections int
	// Rate, when > 0, runs open loop at this many requests per second in
	// total; 0 runs closed loop.
	Rate float64
	// Duration bounds the measured phase (after warm-up). At least one of
	// Duration and Requests must be set; the first reached ends the run.
	Duration time.Duration
	// Requests bounds the number of measured requests.
	Requests int64
	// Warmup is sent before measuring and discarded. Default 0.
	Warmup time.Duration
	// Timeout bounds one request. Default 2s.
	Timeout time.Duration
	// AllowRemote permits a target that is not a loopback address.
	AllowRemote bool
	// Seed makes generated contexts reproducible. Default 1.
	Seed uint64
	// Progress, when non-nil, receives one line per second while running.
	Progress io.Writer
	// Headers are added to every request, as "Name: value" (an API key for
	// a peer that wants one). They are never logged or reported.
	Headers []string
	// Label names the target in reports (default: the URL's host).
	Label string
	// Resolver is used for the loopback check; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// defaults returns o with zero fields defaulted.
func (o Options) defaults() Options {
	if o.Connections == 0 {
		o.Connections = 16
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	return o
}

// validate checks o (after defaults) and returns the target's host:port.
func (o Options) validate(ctx context.Context) (string, error) {
	var errs []error
	if o.Connections < 1 || o.Connections > 4096 {
		errs = append(errs, fmt.Errorf("connections: must be between 1 and 4096 (got %d)", o.Connections))
	}
	if o.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate: must be 0 (closed loop) or a positive requests/second (got %g)", o.Rate))
	}
	if o.Duration < 0 || o.Requests < 0 || o.Warmup < 0 {
		errs = append(errs, errors.New("duration, requests, warmup: must not be negative"))
	}
	if o.Duration == 0 && o.Requests == 0 {
		errs = append(errs, errors.New("duration/requests: set at least one bound (e.g. --duration 10s or --requests 100000)"))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: must be positive (got %v)", o.Timeout))
	}
	if o.Scenario.Name == "" || o.Scenario.next == nil {
		errs = append(errs, errors.New("scenario: not set (use a Scenario from NewScenario)"))
	}
	for i, h := range o.Headers {
		if name, _, ok := strings.Cut(h, ":"); !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(name, " \t\r\n") {
			errs = append(errs, fmt.Errorf("headers[%d]: want \"Name: value\"", i))
		}
	}
	hostport, err := checkTarget(ctx, o.URL, o.AllowRemote, o.Resolver)
	if err != nil {
		errs = append(errs, err)
	}
	return hostport, errors.Join(errs...)
}

// checkTarget parses a target URL and refuses non-loopback hosts unless
// allowRemote: a load generator pointed at the wrong host by a typo is a
// denial-of-service attack.
func checkTarget(ctx context.Context, raw string, allowRemote bool, r *net.Resolver) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url: %v", err)
	}
	if u.Scheme != "http" {
		return "", fmt.Errorf("url: scheme must be http (got %q in %q)", u.Scheme, raw)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", fmt.Errorf("url: no host in %q", raw)
	}
	if port == "" {
		port = "80"
	}
	hostport := net.JoinHostPort(host, port)
	if allowRemote {
		return hostport, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return "", fmt.Errorf("url: %s is not a loopback address (pass --allow-remote to load a remote host)", host)
		}
		return hostport, nil
	}
	if r == nil {
		r = net.DefaultResolver
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := r.LookupIPAddr(rctx, host)
	if err != nil {
		return "", fmt.Errorf("url: resolve %s: %v", host, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return "", fmt.Errorf("url: %s resolves to %s, not a loopback address (pass --allow-remote to load a remote host)", host, a.IP)
		}
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("url: %s resolves to no address", host)
	}
	return hostport, nil
}
