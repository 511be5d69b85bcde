package natsrun

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterR3SurvivesLeaderLoss starts three nodes, writes to an R3
// stream, stops the stream's leader, keeps writing through a client that
// fails over, restarts the node, and checks that every acknowledged
// message is in the stream with its payload.
func TestClusterR3SurvivesLeaderLoss(t *testing.T) {
	c, err := StartCluster(ClusterOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	nc, err := c.Connect(0)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]string{}
	publish := func(n int) {
		for k := range n {
			body := fmt.Sprintf("m%d-%d", len(acked), k)
			// Failover makes single publishes fail while a new leader is
			// elected: retried until acknowledged or ctx ends.
			for {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				ack, err := js.Publish(pctx, "t", []byte(body))
				pcancel()
				if err == nil {
					acked[ack.Sequence] = body
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish %s: %v", body, err)
				}
			}
		}
	}
	publish(10)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream is not R3 across the cluster: %+v", info.Cluster)
	}
	leader := c.NodeNamed(info.Cluster.Leader)
	if leader < 0 {
		t.Fatalf("leader %q is not one of our nodes", info.Cluster.Leader)
	}
	c.Stop(leader)
	publish(10)
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	publish(5)
	if len(acked) != 25 {
		t.Fatalf("acked %d messages, want 25", len(acked))
	}
	for seq, body := range acked {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("acked message %d (%s) lost: %v", seq, body, err)
		}
		if string(m.Data) != body {
			t.Fatalf("message %d = %q, acked %q", seq, m.Data, body)
		}
	}
	if got := c.Node(leader).ClientURL(); got != c.ClientURL(leader) {
		t.Fatalf("restarted node moved: %s, want %s", got, c.ClientURL(leader))
	}
}
