package evaluator

import "math/bits"

// murmur3 computes MurmurHash3 x86 32-bit with seed 0 over the
// concatenation a+b without building it, which is what flagd's fractional
// bucketing hashes (flag key + targeting key). Allocation-free.
func murmur3(a, b string) uint32 {
	const (
		c1 = 0xcc9e2d51
		c2 = 0x1b873593
	)
	var h uint32
	var tail [4]byte
	nt := 0
	total := len(a) + len(b)
	mix := func(k uint32) {
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	feed := func(s string) {
		i := 0
		// finish a partial block left over from the previous string
		for nt > 0 && nt < 4 && i < len(s) {
			tail[nt] = s[i]
			nt++
			i++
			if nt == 4 {
				mix(uint32(tail[0]) | uint32(tail[1])<<8 | uint32(tail[2])<<16 | uint32(tail[3])<<24)
				nt = 0
			}
		}
		for ; i+4 <= len(s); i += 4 {
			mix(uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24)
		}
		for ; i < len(s); i++ {
			tail[nt] = s[i]
			nt++
		}
	}
	feed(a)
	feed(b)
	var k uint32
	switch nt {
	case 3:
		k ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		k ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		k ^= uint32(tail[0])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
	}
	h ^= uint32(total)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
