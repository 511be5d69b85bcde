// Package deploy holds pennon's Kubernetes manifests (k8s/), its Helm chart
// (helm/pennon) and the tests that decode both strictly into the Kubernetes
// API types and check the invariants a platform team relies on: probes,
// security contexts, resources, localhost binding, selectors that select.
// The `pennon inject` implementation lives in deploy/inject.
package deploy
