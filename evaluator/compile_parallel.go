package evaluator

import (
	"runtime"
	"sync"
)

// compiledSpec is one spec's compiled flag and the problems compiling found.
type compiledSpec struct {
	flag     *Flag
	problems []Problem
}

// parallelCompileMin is the set size from which compiling is spread over
// the cores: below it, starting goroutines costs more than it saves.
const parallelCompileMin = 256

// compileSpecs compiles every spec with a key (compiled[i] is specs[i]'s),
// on all cores for a big set. Each flag compiles on its own (compileFlag
// reads only its spec and the immutable operator table), and start-up at
// 100,000 flags spent most of its time compiling them one after another.
func compileSpecs(specs []FlagSpec) []compiledSpec {
	compiled := make([]compiledSpec, len(specs))
	one := func(i int) {
		if sp := &specs[i]; sp.Key != "" {
			compiled[i].flag, compiled[i].problems = compileFlag(sp, "flags."+sp.Key)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(specs)/parallelCompileMin+1)
	if workers <= 1 {
		for i := range specs {
			one(i)
		}
		return compiled
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(specs); i += workers {
				one(i)
			}
		}()
	}
	wg.Wait()
	return compiled
}
