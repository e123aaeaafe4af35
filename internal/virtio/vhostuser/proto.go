package vhostuser

import (
	"encoding/binary"
	"fmt"
)

// The vhost-user protocol's wire format (QEMU docs/interop/vhost-user.rst,
// mirrored by rust-vmm's vhost crate, vhost_user/message.rs): a 12-byte
// header and a payload, all in the machine's byte order (little-endian
// on x86-64), file descriptors as SCM_RIGHTS ancillary data.

// Request is a front-end request code (VHOST_USER_*).
type Request uint32

// Front-end requests Nimbus sends.
const (
	GetFeatures         Request = 1
	SetFeatures         Request = 2
	SetOwner            Request = 3
	SetMemTable         Request = 5
	SetVringNum         Request = 8
	SetVringAddr        Request = 9
	SetVringBase        Request = 10
	GetVringBase        Request = 11
	SetVringKick        Request = 12
	SetVringCall        Request = 13
	GetProtocolFeatures Request = 15
	SetProtocolFeatures Request = 16
	GetQueueNum         Request = 17
	SetVringEnable      Request = 18
	GetConfig           Request = 24
	GetMaxMemSlots      Request = 36
	AddMemReg           Request = 37
	RemMemReg           Request = 38
)

var requestNames = map[Request]string{
	GetFeatures: "GET_FEATURES", SetFeatures: "SET_FEATURES", SetOwner: "SET_OWNER",
	SetMemTable: "SET_MEM_TABLE", SetVringNum: "SET_VRING_NUM", SetVringAddr: "SET_VRING_ADDR",
	SetVringBase: "SET_VRING_BASE", GetVringBase: "GET_VRING_BASE", SetVringKick: "SET_VRING_KICK",
	SetVringCall: "SET_VRING_CALL", GetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	SetProtocolFeatures: "SET_PROTOCOL_FEATURES", GetQueueNum: "GET_QUEUE_NUM",
	SetVringEnable: "SET_VRING_ENABLE", GetConfig: "GET_CONFIG", GetMaxMemSlots: "GET_MAX_MEM_SLOTS",
	AddMemReg: "ADD_MEM_REG", RemMemReg: "REM_MEM_REG",
}

func (r Request) String() string {
	if n, ok := requestNames[r]; ok {
		return "VHOST_USER_" + n
	}
	return fmt.Sprintf("VHOST_USER_%d", uint32(r))
}

// hasReply says whether the back end answers r even without NEED_REPLY.
func (r Request) hasReply() bool {
	switch r {
	case GetFeatures, GetProtocolFeatures, GetVringBase, GetQueueNum, GetConfig, GetMaxMemSlots:
		return true
	}
	return false
}

// Header flags.
const (
	flagVersion   = 0x1 // protocol version 1
	flagReply     = 0x4
	flagNeedReply = 0x8
	headerSize    = 12
	// maxPayload bounds what Nimbus accepts from a back end (the vhost
	// crate's MAX_MSG_SIZE).
	maxPayload = 0x1000
)

// Header is VhostUserMsg's header.
type Header struct {
	Request Request
	Flags   uint32
	Size    uint32
}

// MarshalBinary encodes the header.
func (h Header) MarshalBinary() ([]byte, error) {
	b := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(b[0:], uint32(h.Request))
	binary.LittleEndian.PutUint32(b[4:], h.Flags)
	binary.LittleEndian.PutUint32(b[8:], h.Size)
	return b, nil
}

func parseHeader(b []byte) Header {
	return Header{
		Request: Request(binary.LittleEndian.Uint32(b[0:])),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}
}

// Virtio feature bits vhost-user adds in the transport range.
const (
	// FProtocolFeatures (VHOST_USER_F_PROTOCOL_FEATURES) says the back end
	// speaks protocol features; once acked, rings start disabled until
	// SET_VRING_ENABLE.
	FProtocolFeatures = 1 << 30
	// FLogAll (VHOST_F_LOG_ALL): dirty logging, for live migration.
	FLogAll = 1 << 26
)

// Protocol feature bits (VHOST_USER_PROTOCOL_F_*).
const (
	ProtocolMQ                = 1 << 0
	ProtocolLogShmfd          = 1 << 1
	ProtocolReplyAck          = 1 << 3
	ProtocolConfig            = 1 << 9
	ProtocolInflightShmfd     = 1 << 12
	ProtocolConfigureMemSlots = 1 << 15
)

// VringState is struct vhost_vring_state: SET_VRING_NUM, SET_VRING_BASE,
// GET_VRING_BASE and SET_VRING_ENABLE.
type VringState struct {
	Index uint32
	Num   uint32
}

// MarshalBinary encodes the state.
func (s VringState) MarshalBinary() ([]byte, error) {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b[0:], s.Index)
	binary.LittleEndian.PutUint32(b[4:], s.Num)
	return b, nil
}

// VringAddr is struct vhost_vring_addr: the rings' addresses in the
// front end's virtual address space (the back end translates them with
// the memory table's userspace addresses).
type VringAddr struct {
	Index, Flags           uint32
	Desc, Used, Avail, Log uint64
}

// MarshalBinary encodes the addresses.
func (a VringAddr) MarshalBinary() ([]byte, error) {
	b := make([]byte, 40)
	binary.LittleEndian.PutUint32(b[0:], a.Index)
	binary.LittleEndian.PutUint32(b[4:], a.Flags)
	binary.LittleEndian.PutUint64(b[8:], a.Desc)
	binary.LittleEndian.PutUint64(b[16:], a.Used)
	binary.LittleEndian.PutUint64(b[24:], a.Avail)
	binary.LittleEndian.PutUint64(b[32:], a.Log)
	return b, nil
}

// MemoryRegion is VhostUserMemoryRegion: one guest RAM region the back end
// maps from the file descriptor sent with it, at MmapOffset.
type MemoryRegion struct {
	GuestPhysAddr, MemorySize, UserspaceAddr, MmapOffset uint64
}

func (r MemoryRegion) put(b []byte) {
	binary.LittleEndian.PutUint64(b[0:], r.GuestPhysAddr)
	binary.LittleEndian.PutUint64(b[8:], r.MemorySize)
	binary.LittleEndian.PutUint64(b[16:], r.UserspaceAddr)
	binary.LittleEndian.PutUint64(b[24:], r.MmapOffset)
}

// MaxMemTableRegions is VHOST_MEMORY_BASELINE_NREGIONS: SET_MEM_TABLE's
// limit.
const MaxMemTableRegions = 8

// MemTable is SET_MEM_TABLE's payload, VhostUserMemory: a region count,
// padding, and the regions.
type MemTable []MemoryRegion

// MarshalBinary encodes the table.
func (t MemTable) MarshalBinary() ([]byte, error) {
	b := make([]byte, 8+32*len(t))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(t)))
	for i, r := range t {
		r.put(b[8+32*i:])
	}
	return b, nil
}

// SingleMemRegion is ADD_MEM_REG's payload, VhostUserSingleMemRegion:
// 8 bytes of padding, then one region.
type SingleMemRegion MemoryRegion

// MarshalBinary encodes the region.
func (r SingleMemRegion) MarshalBinary() ([]byte, error) {
	b := make([]byte, 8+32)
	MemoryRegion(r).put(b[8:])
	return b, nil
}

// vringFDNoFD in SET_VRING_KICK/CALL's u64 says no descriptor follows
// (VHOST_USER_VRING_NOFD_MASK); the low byte is the ring index.
const vringFDNoFD = 1 << 8

// ConfigHeader is VhostUserConfig's header for GET_CONFIG: offset, size
// and flags, followed by size bytes of config space.
type ConfigHeader struct {
	Offset, Size, Flags uint32
}

// MarshalBinary encodes the header and size zero bytes.
func (c ConfigHeader) MarshalBinary() ([]byte, error) {
	b := make([]byte, 12+int(c.Size))
	binary.LittleEndian.PutUint32(b[0:], c.Offset)
	binary.LittleEndian.PutUint32(b[4:], c.Size)
	binary.LittleEndian.PutUint32(b[8:], c.Flags)
	return b, nil
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
