package link

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"veil/proto"
)

// BenchmarkLinkCells streams fixed cells from one Link to another over
// 127.0.0.1 and counts cell bytes (514 per cell). The receiver's handler
// returns each cell to the pool.
func BenchmarkLinkCells(b *testing.B) {
	cfg := DefaultConfig()
	var got, want atomic.Int64
	want.Store(int64(b.N))
	done := make(chan struct{})
	recvID := newIdentity(b)
	recv := NewLinks(recvID.Key, cfg)
	recv.SetHandlers(Handlers{Cell: func(l Conn, c *proto.Cell) {
		proto.PutCell(c)
		if got.Add(1) == want.Load() {
			close(done)
		}
	}})
	addr, err := recv.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer recv.Close()
	send := NewLinks(newIdentity(b).Key, cfg)
	defer send.Close()
	l, err := send.Get(context.Background(), recvID.ID, addr.String())
	if err != nil {
		b.Fatal(err)
	}

	b.SetBytes(proto.CellSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c := proto.GetCell()
		c.SetCircID(7)
		c.SetCommand(proto.CmdRelay)
		if err := l.SendCell(c); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("received %d of %d cells", got.Load(), b.N)
	}
	b.StopTimer()
	reportCPU(b, cpu0)
}

// BenchmarkLinkRawTLS moves the same bytes as BenchmarkLinkCells over a bare
// TLS 1.3 connection on 127.0.0.1 with the same certificates, written in
// large (127-cell) writes: the ceiling the link layer is measured against.
func BenchmarkLinkRawTLS(b *testing.B) {
	sc, err := linkCertificate(newIdentity(b).Key, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	cc, _ := linkCertificate(newIdentity(b).Key, time.Now())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	total := int64(b.N) * proto.CellSize
	readDone := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			readDone <- err
			return
		}
		defer conn.Close()
		tc := tls.Server(conn, linkTLSConfig(sc))
		buf := make([]byte, 64<<10)
		_, err = io.CopyBuffer(io.Discard, io.LimitReader(struct{ io.Reader }{tc}, total), buf)
		readDone <- err
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	tc := tls.Client(conn, linkTLSConfig(cc))
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 127*proto.CellSize)

	b.SetBytes(proto.CellSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for left := total; left > 0; {
		n := min(left, int64(len(chunk)))
		if _, err := tc.Write(chunk[:n]); err != nil {
			b.Fatal(err)
		}
		left -= n
	}
	if err := <-readDone; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	reportCPU(b, cpu0)
}

// reportCPU reports MB of cell bytes per second of the process's CPU time
// since cpu0: unlike MB/s, it barely moves when other work shares the
// machine.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)*proto.CellSize/1e6/cpu.Seconds(), "MB/cpu-s")
	}
}

// cpuTime is the user+system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
