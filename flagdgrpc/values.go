package flagdgrpc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pennon-dev/pennon/evaluator"
)

// toValue converts decoded JSON as the evaluator and config hold it
// (json.Number, int64, float64, bool, string, nil, []any, map[string]any)
// into a protobuf Value. structpb.NewValue rejects json.Number (how config
// keeps metadata numbers), hence this converter.
func toValue(v any) (*structpb.Value, error) {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue(), nil
	case bool:
		return structpb.NewBoolValue(x), nil
	case string:
		return structpb.NewStringValue(x), nil
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("number %s: %w", x, err)
		}
		return structpb.NewNumberValue(f), nil
	case float64:
		return structpb.NewNumberValue(x), nil
	case int64:
		return structpb.NewNumberValue(float64(x)), nil
	case int:
		return structpb.NewNumberValue(float64(x)), nil
	case map[string]any:
		s, err := toStruct(x)
		if err != nil {
			return nil, err
		}
		return structpb.NewStructValue(s), nil
	case []any:
		l := &structpb.ListValue{Values: make([]*structpb.Value, len(x))}
		for i, e := range x {
			ev, err := toValue(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			l.Values[i] = ev
		}
		return structpb.NewListValue(l), nil
	default:
		return nil, fmt.Errorf("unsupported value of type %T", v)
	}
}

func toStruct(m map[string]any) (*structpb.Struct, error) {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(m))}
	for k, v := range m {
		pv, err := toValue(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		s.Fields[k] = pv
	}
	return s, nil
}

// structCache holds the protobuf form of metadata and object values for one
// snapshot. Both are constant per snapshot (a flag's metadata, or its
// metadata plus a prerequisite failure; a variant's value), so each is
// converted once and the immutable message is shared by every response:
// gRPC only reads messages it marshals.
type structCache struct {
	snap *evaluator.Snapshot
	m    sync.Map // string(JSON) → *structpb.Struct
}

type structCaches struct{ cur atomic.Pointer[structCache] }

// forSnapshot returns the cache for snap, starting a new one when the
// snapshot changed (the old one is garbage once no request holds it).
func (c *structCaches) forSnapshot(snap *evaluator.Snapshot) *structCache {
	for {
		cur := c.cur.Load()
		if cur != nil && cur.snap == snap {
			return cur
		}
		next := &structCache{snap: snap}
		if c.cur.CompareAndSwap(cur, next) {
			return next
		}
	}
}

var emptyStruct = &structpb.Struct{Fields: map[string]*structpb.Value{}}

// object converts a JSON object (metadata, an object variant) once per
// snapshot. ok is false when raw is not a JSON object.
func (c *structCache) object(raw []byte) (*structpb.Struct, bool) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("{}")) {
		return emptyStruct, true
	}
	if v, ok := c.m.Load(string(raw)); ok {
		return v.(*structpb.Struct), true
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	s, err := toStruct(m)
	if err != nil {
		return nil, false
	}
	c.m.Store(string(raw), s)
	return s, true
}

// formatInt formats version numbers for metadata Structs as strings: a
// Struct number is a double, which cannot hold every uint64.
func formatInt(v uint64) string { return strconv.FormatUint(v, 10) }

// asFloat reports a numeric variant value as float64.
func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	}
	return 0, false
}

// asInt truncates a numeric variant value to int64, as flagd does: its
// ResolveInt resolves a float and converts it with int64().
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case float64:
		if math.IsNaN(x) || x >= math.MaxInt64 || x <= math.MinInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}
