package blk

import "unsafe"

// addrOf is the address of b's first byte, to align O_DIRECT buffers and
// to test guest buffers for alignment. Go's heap does not move objects.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
