package natsrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pennon-dev/pennon/internal/natsauth"
)

// ClusterOptions configure an in-process NATS cluster: the topology pennon
// recommends at scale (R3 JetStream streams over three servers), started
// on loopback so benches and tests can kill and restart one node.
type ClusterOptions struct {
	// DataDir holds one JetStream store per node (DataDir/<node name>).
	// Required.
	DataDir string
	// Nodes is the cluster size; default 3 (the smallest that keeps an R3
	// stream writable with one node down).
	Nodes int
	// Name is the cluster name (JetStream clustering requires one);
	// default "pennon".
	Name string
	// Keys are the operator and accounts every node trusts. All nodes
	// must share one set, or a client that moves to another node after a
	// failure is refused. Nil generates one set for the whole cluster.
	Keys *natsauth.Keys
	// SyncAlways fsyncs every write on every node. A replicated cluster
	// relies on R3 for durability, so benches usually leave it off.
	SyncAlways bool
	// ReadyTimeout bounds the wait for JetStream's meta leader at start
	// and after a restart; default 30s.
	ReadyTimeout time.Duration
}

// Cluster is a running in-process NATS cluster on loopback. Node i keeps
// its client and route ports across Stop and Restart, so clients that know
// its URL (and the other nodes' routes) find it again.
type Cluster struct {
	Keys *natsauth.Keys

	o           ClusterOptions
	names       []string
	clientPorts []int
	routePorts  []int

	mu    sync.Mutex
	nodes []*server.Server // nil while a node is stopped
	cred  *natsauth.Credential
}

// StartCluster starts every node, routes them into a full mesh on random
// loopback ports, and waits until JetStream has a meta leader and every
// node reports healthy. Stop it with Shutdown.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	if o.DataDir == "" {
		return nil, errors.New("natsrun: ClusterOptions.DataDir is required")
	}
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.Name == "" {
		o.Name = "pennon"
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 30 * time.Second
	}
	if o.Keys == nil {
		k, err := natsauth.Generate()
		if err != nil {
			return nil, fmt.Errorf("natsrun: %w", err)
		}
		o.Keys = k
	}
	// A node can fail to start when another process takes one of its
	// ports between freePorts and the bind, or when a loaded machine is
	// slow: the whole cluster is started again on fresh ports (and a fresh
	// data directory), up to three times.
	var err error
	for attempt := range 3 {
		co := o
		if attempt > 0 {
			co.DataDir = filepath.Join(o.DataDir, fmt.Sprintf("retry%d", attempt))
		}
		var c *Cluster
		if c, err = startClusterOnce(co); err == nil {
			return c, nil
		}
	}
	return nil, err
}

func startClusterOnce(o ClusterOptions) (*Cluster, error) {
	c := &Cluster{Keys: o.Keys, o: o, nodes: make([]*server.Server, o.Nodes)}
	// Ports are chosen up front: every node's route list must name every
	// other node before any of them starts, and a restarted node must come
	// back where its clients and peers expect it.
	ports, err := freePorts(2 * o.Nodes)
	if err != nil {
		return nil, err
	}
	for i := range o.Nodes {
		c.names = append(c.names, fmt.Sprintf("n%d", i+1))
		c.clientPorts = append(c.clientPorts, ports[2*i])
		c.routePorts = append(c.routePorts, ports[2*i+1])
	}
	errc := make(chan error, o.Nodes)
	for i := range o.Nodes {
		// Started concurrently: a node waits for its peers before
		// JetStream is ready, and sequential starts would each wait alone.
		go func() { errc <- c.start(i, false) }()
	}
	for range o.Nodes {
		if e := <-errc; e != nil && err == nil {
			err = e
		}
	}
	if err == nil {
		err = c.WaitReady(o.ReadyTimeout)
	}
	if err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// freePorts reserves n distinct loopback ports by listening on port 0 and
// closing; another process could take one before the node binds it, which
// on loopback in a test or bench is rare enough to report as an error.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("natsrun: reserve a loopback port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// start starts node i; ready waits for it to accept clients.
func (c *Cluster) start(i int, restart bool) error {
	dir := filepath.Join(c.o.DataDir, c.names[i])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("natsrun: node %s: %w", c.names[i], err)
	}
	var routes []string
	for j, p := range c.routePorts {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
		}
	}
	opts := &server.Options{
		ServerName: c.names[i],
		Host:       "127.0.0.1",
		Port:       c.clientPorts[i],
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: c.o.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: 8 << 20, // as in Start: large flag sets exceed 1 MiB
		Cluster: server.ClusterOpts{
			Name: c.o.Name,
			Host: "127.0.0.1",
			Port: c.routePorts[i],
			// Retry routes forever: peers start in any order and a
			// restarted node must find the others again.
			ConnectRetries: -1,
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	}
	if err := c.Keys.ConfigureServer(opts); err != nil {
		return fmt.Errorf("natsrun: node %s: %w", c.names[i], err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("natsrun: node %s: %w", c.names[i], err)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		s.Shutdown()
		what := "start"
		if restart {
			what = "restart"
		}
		return fmt.Errorf("natsrun: node %s did not %s within 20s (client port %d, route port %d)", c.names[i], what, c.clientPorts[i], c.routePorts[i])
	}
	c.mu.Lock()
	c.nodes[i] = s
	c.mu.Unlock()
	return nil
}

// WaitReady waits until one running node is JetStream's meta leader, the
// leader sees every running node online, every running node reports
// healthy, and a probe stream with as many replicas as running nodes (at
// most 3) can be placed. The probe is what callers need: right after the
// meta group forms, placement may still fail with "no suitable peers for
// placement, peer offline" while the health checks already pass.
func (c *Cluster) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		last := c.notReady()
		if last == "" {
			err := c.probe(time.Until(deadline))
			if err == nil {
				return nil
			}
			last = "probe stream: " + err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsrun: cluster not ready within %v: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probeStream is created and deleted by WaitReady.
const probeStream = "NATSRUN_READY_PROBE"

func (c *Cluster) probe(timeout time.Duration) error {
	up := 0
	first := -1
	for i, s := range c.running() {
		if s != nil {
			up++
			if first < 0 {
				first = i
			}
		}
	}
	if first < 0 {
		return errors.New("no node running")
	}
	nc, err := c.Connect(first, nats.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(max(timeout, time.Second), 5*time.Second))
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: probeStream, Subjects: []string{"natsrun.ready.probe"},
		Replicas: min(up, 3), Storage: jetstream.MemoryStorage}); err != nil {
		return err
	}
	return js.DeleteStream(ctx, probeStream)
}

// notReady says why the cluster is not ready yet, or "".
func (c *Cluster) notReady() string {
	nodes := c.running()
	var leader *server.Server
	up := 0
	for i, s := range nodes {
		if s == nil {
			continue
		}
		up++
		if s.JetStreamIsLeader() {
			leader = s
		}
		if h := s.Healthz(&server.HealthzOptions{JSMetaOnly: true}); h.Status != "ok" {
			return fmt.Sprintf("node %s: %s", c.names[i], h.Error)
		}
	}
	if leader == nil {
		return "no JetStream meta leader yet"
	}
	if peers := leader.JetStreamClusterPeers(); len(peers) < up {
		return fmt.Sprintf("meta leader %s sees %d of %d nodes online (%v)", leader.Name(), len(peers), up, peers)
	}
	return ""
}

func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*server.Server(nil), c.nodes...)
}

// Len is the number of nodes, running or stopped.
func (c *Cluster) Len() int { return len(c.names) }

// Name is node i's server name (as JetStream reports stream leaders).
func (c *Cluster) Name(i int) string { return c.names[i] }

// Node is node i's server, nil while it is stopped.
func (c *Cluster) Node(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// NodeNamed is the index of the node called name, or -1.
func (c *Cluster) NodeNamed(name string) int {
	for i, n := range c.names {
		if n == name {
			return i
		}
	}
	return -1
}

// ClientURL is node i's client URL (valid while stopped, too).
func (c *Cluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.clientPorts[i])
}

// URLs lists every node's client URL starting with node first, comma
// separated as nats.Connect takes them: a client prefers node first and
// fails over to the others in order.
func (c *Cluster) URLs(first int) string {
	n := len(c.names)
	urls := make([]string, 0, n)
	for k := range n {
		urls = append(urls, c.ClientURL((first+k)%n))
	}
	return strings.Join(urls, ",")
}

// Stop shuts node i down (a crash as far as its peers and clients can
// tell: connections drop, the node's JetStream replicas go away).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts a stopped node i again on its ports with its data, and
// waits until the cluster is ready.
func (c *Cluster) Restart(i int) error {
	if c.Node(i) != nil {
		return fmt.Errorf("natsrun: node %s is running; Stop it first", c.names[i])
	}
	if err := c.start(i, true); err != nil {
		return err
	}
	return c.WaitReady(c.o.ReadyTimeout)
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.names {
		c.Stop(i)
	}
}

// ControlCredential is the control plane's credential for this cluster,
// minted once (it does not expire; it dies with the keys).
func (c *Cluster) ControlCredential() (natsauth.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cred == nil {
		cr, err := c.Keys.ControlPlane(0)
		if err != nil {
			return natsauth.Credential{}, err
		}
		c.cred = &cr
	}
	return *c.cred, nil
}

// Connect connects with the control plane's identity, preferring node
// first and failing over to the others, reconnecting forever, plus opts.
func (c *Cluster) Connect(first int, opts ...nats.Option) (*nats.Conn, error) {
	cr, err := c.ControlCredential()
	if err != nil {
		return nil, err
	}
	base := []nats.Option{nats.UserJWTAndSeed(cr.JWT, string(cr.Seed)), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	return nats.Connect(c.URLs(first), append(base, opts...)...)
}
