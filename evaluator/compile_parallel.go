package evaluator

import "github.com/pennon-dev/pennon/internal/parallel"

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
	parallel.Ranges(len(specs), parallel.Workers(len(specs), parallelCompileMin), func(_, from, to int) {
		for i := from; i < to; i++ {
			compiled[i] = CompileFlag(&specs[i])
		}
	})
	return compiled
}
