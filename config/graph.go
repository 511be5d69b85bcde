package config

import "sort"

// Graph is the prerequisite graph of a document: which flags a flag needs
// (prerequisites) and which flags need it (dependents).
type Graph struct {
	needs  map[string][]string
	needed map[string][]string
}

// NewGraph builds the graph of d.
func NewGraph(d *Document) *Graph {
	g := &Graph{needs: map[string][]string{}, needed: map[string][]string{}}
	for _, k := range d.FlagKeys() {
		for p := range d.Flag(k).Prerequisites {
			g.needs[k] = append(g.needs[k], p)
			g.needed[p] = append(g.needed[p], k)
		}
	}
	return g
}

// Dependents returns every flag that needs one of flags, transitively,
// excluding flags themselves, sorted.
func (g *Graph) Dependents(flags ...string) []string { return walk(g.needed, flags) }

// Prerequisites returns every flag one of flags needs, transitively,
// excluding flags themselves, sorted.
func (g *Graph) Prerequisites(flags ...string) []string { return walk(g.needs, flags) }

func walk(edges map[string][]string, start []string) []string {
	seen := map[string]bool{}
	for _, s := range start {
		seen[s] = true
	}
	var out []string
	queue := append([]string(nil), start...)
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		for _, n := range edges[k] {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
				queue = append(queue, n)
			}
		}
	}
	sort.Strings(out)
	return out
}
