package kademlia

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// hugeHeap asks Linux for transparent huge pages (2 MB) under the Go
// heap, for a benchmark whose heap is far larger than what the TLB maps
// with 4 kB pages (a 100,000-node simulation: 1.3 GB touched at random).
// The Go runtime does not ask for them itself, and where transparent
// huge pages are enabled only "madvise" (a common default), memory gets
// them only when advised. So the heap is first grown to size (a
// reservation never touched: it costs no memory), its mappings are
// advised (MADV_HUGEPAGE), and the reservation is freed: the heap's
// later allocations reuse those addresses, whose pages the kernel then
// hands out 2 MB at a time. It returns how many mappings were advised;
// 0 where the kernel refuses or has no huge pages.
func hugeHeap(size int) int {
	b := make([]byte, size)
	n := adviseHugeMappings(4 << 20)
	runtime.KeepAlive(b)
	b = nil
	runtime.GC()
	debug.FreeOSMemory()
	return n
}

// adviseHugeMappings advises the process's private anonymous writable
// mappings of at least min bytes (the Go heap's arenas among them).
func adviseHugeMappings(min uint64) int {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode [name]
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[1] != "rw-p" || fs[4] != "0" || len(fs) > 5 && !strings.HasPrefix(fs[5], "[anon") {
			continue
		}
		start, end, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(start, 16, 64)
		z, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil || z-a < min {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(a), uintptr(z-a), syscall.MADV_HUGEPAGE); e == 0 {
			n++
		}
	}
	return n
}
