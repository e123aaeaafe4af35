package net

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nimbus-vmm/nimbus/internal/virtio"
)

// tap is one queue of a tap interface, non-blocking and on Go's poller.
type tap struct {
	f *os.File
}

// openTaps opens (creating if missing) the tap name with n queues:
// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, plus IFF_MULTI_QUEUE when n > 1. An
// empty name becomes vmtap%d, numbered by the kernel. It returns the
// interface's actual name.
func openTaps(name string, n int) ([]*tap, string, error) {
	if name == "" {
		name = "vmtap%d"
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if n > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	var taps []*tap
	fail := func(err error) ([]*tap, string, error) {
		for _, t := range taps {
			t.f.Close()
		}
		return nil, "", fmt.Errorf("tap %s: %w: %w", name, virtio.ErrBackend, err)
	}
	for range n {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fail(err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fail(err)
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fail(fmt.Errorf("TUNSETIFF: %w", err))
		}
		name = ifr.Name() // vmtap%d resolved; later queues attach to it
		t, err := newTap(fd)
		if err != nil {
			return fail(err)
		}
		taps = append(taps, t)
	}
	return taps, name, nil
}

// newTap sets up an open tap descriptor: 12-byte vnet headers, non-blocking.
func newTap(fd int) (*tap, error) {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
	}
	return wrapFD(fd)
}

func wrapFD(fd int) (*tap, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &tap{f: os.NewFile(uintptr(fd), "tap")}, nil
}

// setOffload programs TUNSETOFFLOAD from the negotiated features.
func (t *tap) setOffload(features uint64) error {
	var err error
	cerr := t.control(func(fd int) { err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunOffloads(features)) })
	return errors.Join(err, cerr)
}

func (t *tap) control(fn func(fd int)) error {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// Interrupt and Rearm make tap a virtio.Interrupter for the Runner.
func (t *tap) Interrupt() error { return t.f.SetDeadline(time.Unix(1, 0)) }

// Rearm undoes Interrupt.
func (t *tap) Rearm() error { return t.f.SetDeadline(time.Time{}) }

// configureHost applies host_mac, ip/mask and mtu to the interface and
// brings it up, as upstream's open_tap does.
func configureHost(name, hostMAC, ip, mask string, mtu *uint16) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if hostMAC != "" {
		hw, err := net.ParseMAC(hostMAC)
		if err != nil {
			return fmt.Errorf("host_mac %q: %w: %w", hostMAC, virtio.ErrInvalid, err)
		}
		if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
			return fmt.Errorf("set host_mac: %w", err)
		}
	}
	if mtu != nil {
		if err := netlink.LinkSetMTU(link, int(*mtu)); err != nil {
			return fmt.Errorf("set mtu: %w", err)
		}
	}
	if ip != "" {
		addr := net.ParseIP(ip)
		m := net.ParseIP(mask)
		if addr == nil || (mask != "" && m == nil) {
			return fmt.Errorf("ip %q mask %q: %w", ip, mask, virtio.ErrInvalid)
		}
		ipn := &net.IPNet{IP: addr}
		if v4 := addr.To4(); v4 != nil {
			ipn.IP = v4
			ipn.Mask = net.IPv4Mask(255, 255, 255, 0)
			if m != nil {
				ipn.Mask = net.IPMask(m.To4())
			}
		} else {
			ipn.Mask = net.CIDRMask(64, 128)
			if m != nil {
				ipn.Mask = net.IPMask(m.To16())
			}
		}
		if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("set ip: %w", err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}
