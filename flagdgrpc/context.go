package flagdgrpc

import (
	"math"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pennon-dev/pennon/evaluator"
	"github.com/pennon-dev/pennon/proxy"
)

// decodeContext fills ec from a request's context Struct. The Struct is
// written out as JSON and decoded by the same decoder, with the same limits,
// as an OFREP request body: one decoder means the two protocols cannot
// disagree about what a context contains (numbers, nesting, size limits).
// buf is scratch space; the grown buffer is returned for reuse.
func decodeContext(ec *evaluator.Context, st *structpb.Struct, lim evaluator.Limits, buf []byte) ([]byte, error) {
	if st == nil || len(st.GetFields()) == 0 {
		ec.Reset()
		return buf, nil
	}
	max := lim.MaxDepth
	if max <= 0 {
		max = evaluator.DefaultLimits.MaxDepth
	}
	buf, err := appendStruct(buf[:0], st, 0, max)
	if err != nil {
		ec.Reset()
		return buf, &evaluator.ContextError{Code: evaluator.CodeInvalidContext, Detail: "context" + err.path + ": " + err.msg}
	}
	return buf, ec.Decode(buf, lim)
}

// valueError is a context too deep to take; path is built only on the way
// out, so a good context costs no path strings.
type valueError struct{ path, msg string }

func tooDeep(max int) *valueError {
	return &valueError{msg: "nested deeper than " + strconv.Itoa(max) + " levels; flatten the context"}
}

func appendStruct(dst []byte, st *structpb.Struct, depth, max int) ([]byte, *valueError) {
	if depth >= max {
		return dst, tooDeep(max)
	}
	dst = append(dst, '{')
	first := true
	for k, v := range st.GetFields() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = proxy.AppendJSONString(dst, k)
		dst = append(dst, ':')
		var err *valueError
		if dst, err = appendValue(dst, v, depth+1, max); err != nil {
			err.path = "." + k + err.path
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

func appendValue(dst []byte, v *structpb.Value, depth, max int) ([]byte, *valueError) {
	switch k := v.GetKind().(type) {
	case nil, *structpb.Value_NullValue:
		return append(dst, "null"...), nil
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(dst, k.BoolValue), nil
	case *structpb.Value_StringValue:
		return proxy.AppendJSONString(dst, k.StringValue), nil
	case *structpb.Value_NumberValue:
		// A Struct can carry NaN and ±Inf, which JSON cannot. flagd reads
		// contexts through Struct.AsMap, which turns them into the strings
		// "NaN", "Infinity" and "-Infinity"; so do we.
		switch f := k.NumberValue; {
		case math.IsNaN(f):
			return append(dst, `"NaN"`...), nil
		case math.IsInf(f, 1):
			return append(dst, `"Infinity"`...), nil
		case math.IsInf(f, -1):
			return append(dst, `"-Infinity"`...), nil
		default:
			return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
		}
	case *structpb.Value_StructValue:
		return appendStruct(dst, k.StructValue, depth, max)
	case *structpb.Value_ListValue:
		if depth >= max {
			return dst, tooDeep(max)
		}
		dst = append(dst, '[')
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err *valueError
			if dst, err = appendValue(dst, e, depth+1, max); err != nil {
				err.path = "[" + strconv.Itoa(i) + "]" + err.path
				return dst, err
			}
		}
		return append(dst, ']'), nil
	default:
		return append(dst, "null"...), nil
	}
}
