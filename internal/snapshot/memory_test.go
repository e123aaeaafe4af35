package snapshot

import (
	"math"
	"testing"
)

// A range table whose lengths add up past 2^64 must not pass for a small
// memory file (found by fuzzing).
func TestRangeTableSizeDoesNotWrap(t *testing.T) {
	rt := RangeTable{Data: []Range{{GPA: 0, Length: math.MaxUint64}, {GPA: 0, Length: 2}}}
	if got := rt.Size(); got != math.MaxUint64 {
		t.Fatalf("Size() = %d", got)
	}
	if got := (RangeTable{Data: []Range{{0, 4096}, {8192, 4096}}}).Size(); got != 8192 {
		t.Fatalf("Size() = %d", got)
	}
}
