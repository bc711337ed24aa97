package ordb

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"veil/chunkstore"
)

// benchSize is what BenchmarkFetchThroughORDB and BenchmarkDirectTLSTransfer
// move per iteration.
const benchSize = 100 << 20

// BenchmarkFetchThroughORDB: a publisher whose content leaves through its
// own circuit (pubhops hops, the ORDB last) advertises 100 MB to an ORDB;
// a requester fetches it over a 3-hop circuit ending at that ORDB, which
// relays each query back along the publisher's circuit. Every range is
// verified and stored (bbolt, fsync on). Compare with circuits'
// BenchmarkCircuit3Hop and BenchmarkDirectTLSTransfer in the same run.
func BenchmarkFetchThroughORDB(b *testing.B) {
	for _, pubHops := range []int{1, 3} {
		b.Run(fmt.Sprintf("pubhops=%d", pubHops), func(b *testing.B) { benchFetchThroughORDB(b, pubHops) })
	}
}

func benchFetchThroughORDB(b *testing.B, pubHops int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	net := newTestNet(b, ctx)
	defer net.close()
	var infra []*netNode
	for range 6 {
		infra = append(infra, net.addInfra("infra", func(c *RelayConfig) { c.DHT = nil }))
	}
	pub, req := net.addPeer("P"), net.addPeer("R")
	o := infra[5]
	pubPath := append(append([]*netNode{}, infra[3:3+pubHops-1]...), o)
	pub.circs.add(net.build(pub, pubPath...))
	data := make([]byte, benchSize)
	rand.Read(data)
	_, priv, _ := ed25519.GenerateKey(nil)
	_, name, err := pub.store.Publish(ctx, priv, "application/octet-stream", 1_700_000_000, bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pub.peer.Advertise(ctx, name); err != nil && !isTooFew(err) {
		b.Fatal(err)
	}
	rc := net.build(req, infra[0], infra[1], o)
	b.SetBytes(benchSize)
	b.ResetTimer()
	cpu0, n := cpuTime(), 0
	defer func() { reportCPU(b, cpu0, n) }()
	for i := 0; b.Loop(); i++ {
		n++
		st, err := chunkstore.Open(chunkstore.DefaultConfig(filepath.Join(b.TempDir(), fmt.Sprintf("r%d.db", i))))
		if err != nil {
			b.Fatal(err)
		}
		s, err := rc.OpenStream(ctx, ORDBDest)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Fetch(ctx, s, name, st, FetchConfig{}); err != nil {
			b.Fatal(err)
		}
		st.Close()
	}
}

// BenchmarkDirectTLSTransfer sends the same 100 MB over one TLS 1.3
// connection on 127.0.0.1, in 64 KiB writes: what the hardware gives with
// no circuit, no ORDB, no verification and no store.
func BenchmarkDirectTLSTransfer(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(nil)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		b.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for sent := 0; sent < benchSize; sent += len(buf) {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	b.SetBytes(benchSize)
	cpu0, n := cpuTime(), 0
	defer func() { reportCPU(b, cpu0, n) }()
	for b.Loop() {
		n++
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != benchSize {
			b.Fatalf("read %d: %v", n, err)
		}
	}
}

// cpuTime is the CPU time the process used so far (every node of the
// benchmark is in it).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports MB moved per CPU-second: unlike MB/s, it barely moves
// when other work shares the machine.
func reportCPU(b *testing.B, cpu0 time.Duration, n int) {
	if cpu := cpuTime() - cpu0; cpu > 0 && n > 0 {
		b.ReportMetric(float64(n)*benchSize/1e6/cpu.Seconds(), "MB/cpu-s")
	}
}
