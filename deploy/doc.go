// Package deploy holds pennon's Kubernetes manifests (k8s/), its Helm chart
// (helm/pennon) and the tests that decode both strictly into the Kubernetes
// API types and check the invariants a platform team relies on: probes,
// security contexts, resources, localhost binding, selectors that select,
// and issue 10's: NATS never without authorization (the shipped nats.conf is
// started on a real nats-server), secrets only as files from Secrets, the
// NATS client port open only to the control plane and sidecars.
// The `pennon inject` implementation lives in deploy/inject.
package deploy
