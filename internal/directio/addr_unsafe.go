package directio

import "unsafe"

// addrOf is the address of b's first byte. Go's heap does not move
// objects, so an aligned buffer stays aligned.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
