//go:build race

package fleet

// raceEnabled: the race detector slows the NATS servers and control planes
// several times over, so TestFleetSmall loosens its timing under it.
const raceEnabled = true
