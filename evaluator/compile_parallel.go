package evaluator

import (
	"runtime"
	"sync"
)

// CompiledFlag is one flag compiled on its own, before its snapshot exists
// (SnapshotOptions.Compiled); prerequisites are linked by NewSnapshot.
type CompiledFlag struct {
	flag     *Flag
	problems []Problem
}

// CompileFlag compiles sp alone; it reads only sp (safe to call from
// several goroutines). Its problems are reported by NewSnapshot.
func CompileFlag(sp *FlagSpec) CompiledFlag {
	if sp.Key == "" {
		return CompiledFlag{}
	}
	f, ps := compileFlag(sp, "flags."+sp.Key)
	return CompiledFlag{flag: f, problems: ps}
}

// parallelCompileMin is the set size from which compiling is spread over
// the cores: below it, starting goroutines costs more than it saves.
const parallelCompileMin = 256

// compileSpecs compiles every spec with a key (compiled[i] is specs[i]'s),
// on all cores for a big set. Each flag compiles on its own (compileFlag
// reads only its spec and the immutable operator table), and start-up at
// 100,000 flags spent most of its time compiling them one after another.
func compileSpecs(specs []FlagSpec) []CompiledFlag {
	compiled := make([]CompiledFlag, len(specs))
	one := func(i int) { compiled[i] = CompileFlag(&specs[i]) }
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
