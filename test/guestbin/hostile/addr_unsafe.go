package main

import "unsafe"

// unsafePointer is the address of b's first byte, to look its page up in
// /proc/self/pagemap.
func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
