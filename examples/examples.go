// Package examples embeds the example flag files, so `pennon dev` can load
// the checkout example from any working directory.
package examples

import _ "embed"

// Checkout is examples/checkout.json: the checkout flags with prerequisites
// between them, used by `pennon dev` and the rollback examples.
//
//go:embed checkout.json
var Checkout []byte

// Basic is examples/basic.json: one simple flag of each type.
//
//go:embed basic.json
var Basic []byte
