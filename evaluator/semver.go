package evaluator

import "strings"

// semver is a parsed semantic version. Pre points into the source string,
// so parsing allocates nothing.
type semver struct {
	major, minor, patch uint64
	pre                 string
}

// parseSemver accepts what flagd's sem_ver accepts: an optional v/V prefix,
// one to three numeric parts (missing ones are 0: "1.2" is 1.2.0), an
// optional -prerelease and +build (ignored). Four parts is invalid.
func parseSemver(s string) (semver, bool) {
	var v semver
	if len(s) > 0 && (s[0] == 'v' || s[0] == 'V') {
		s = s[1:]
	}
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.pre = s[i+1:]
		s = s[:i]
		if v.pre == "" {
			return v, false
		}
	}
	parts := [3]*uint64{&v.major, &v.minor, &v.patch}
	n := 0
	for {
		if n == 3 {
			return v, false
		}
		j := 0
		var x uint64
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			x = x*10 + uint64(s[j]-'0')
			if x > 1<<53 {
				return v, false
			}
			j++
		}
		if j == 0 {
			return v, false
		}
		*parts[n] = x
		n++
		s = s[j:]
		if s == "" {
			return v, true
		}
		if s[0] != '.' {
			return v, false
		}
		s = s[1:]
	}
}

// compareSemver orders versions by semver 2.0 precedence.
func compareSemver(a, b semver) int {
	for _, p := range [3][2]uint64{{a.major, b.major}, {a.minor, b.minor}, {a.patch, b.patch}} {
		if p[0] != p[1] {
			if p[0] < p[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case a.pre == b.pre:
		return 0
	case a.pre == "":
		return 1
	case b.pre == "":
		return -1
	}
	return comparePre(a.pre, b.pre)
}

// comparePre compares dot-separated prerelease identifiers: numeric ones
// numerically and below alphanumeric ones; a shorter list that is a prefix
// sorts first.
func comparePre(a, b string) int {
	for a != "" && b != "" {
		var x, y string
		x, a, _ = strings.Cut(a, ".")
		y, b, _ = strings.Cut(b, ".")
		xn, yn := isNumeric(x), isNumeric(y)
		switch {
		case xn && yn:
			if len(x) != len(y) {
				if len(x) < len(y) {
					return -1
				}
				return 1
			}
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
		case xn:
			return -1
		case yn:
			return 1
		default:
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
		}
	}
	switch {
	case a == "" && b == "":
		return 0
	case a == "":
		return -1
	}
	return 1
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// compileSemVer compiles {"sem_ver": [version, operator, version]}. Any
// invalid input (a non-version, an unknown operator) gives null, so the flag
// falls back to its default variant, as in flagd.
func (c *compiler) compileSemVer(op string, raw any, path string) node {
	ns := c.compileArgs(op, raw, path)
	if len(ns) != 3 {
		// flagd loads such rules and answers null (the default variant).
		return constNode(nil)
	}
	a, opn, b := ns[0], ns[1], ns[2]
	return func(e *env) any {
		va, ok1 := semverOf(a(e))
		vb, ok2 := semverOf(b(e))
		o, ok3 := opn(e).(string)
		if !ok1 || !ok2 || !ok3 {
			return nil
		}
		switch o {
		case "=":
			return boolVal(compareSemver(va, vb) == 0)
		case "!=":
			return boolVal(compareSemver(va, vb) != 0)
		case "<":
			return boolVal(compareSemver(va, vb) < 0)
		case "<=":
			return boolVal(compareSemver(va, vb) <= 0)
		case ">":
			return boolVal(compareSemver(va, vb) > 0)
		case ">=":
			return boolVal(compareSemver(va, vb) >= 0)
		case "^":
			return boolVal(va.major == vb.major)
		case "~":
			return boolVal(va.major == vb.major && va.minor == vb.minor)
		}
		return nil
	}
}

func semverOf(v any) (semver, bool) {
	switch x := v.(type) {
	case string:
		return parseSemver(x)
	case float64:
		return parseSemver(formatNumber(x))
	}
	return semver{}, false
}
