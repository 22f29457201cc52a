// klio-go-bench: a grpc-go player and a discarding grpc-go server with
// Klio's transport settings, the baseline the walplayer benches compare
// against (benches/grpc_go.rs and benches/simulate_scale.rs build and run
// it; `play -pace 250ms` holds each upload open, sending a block every
// 250 ms).
//
//	klio-go-bench server -listen 127.0.0.1:0 -cert tls.crt -key tls.key -ca ca.crt
//	klio-go-bench play -addr HOST:PORT -ca ca.crt -cert tls.crt -key tls.key -j 4 -block 2048 DIR
//
// The server prints "listening on ADDR" on stdout, then serves until
// SIGTERM or SIGINT and prints its totals on stderr. The player prints one
// line on stdout: "files N bytes B seconds S cipher C", bytes being those
// acknowledged by written_size; it exits 1 if any file failed.
package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"io/ioutil"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
)

// Klio's limits and transport settings (the protocol facts).
const (
	maxBlock      = 8 << 20
	maxMessage    = 8<<20 + 512<<10
	streamWindow  = 16 << 20
	connWindow    = 64 << 20
	socketBuffer  = 1 << 20
	serviceName   = "klio.wal.v1.WAL"
	putMethod     = "/" + serviceName + "/Put"
	connectBudget = 10 * time.Second
)

var putStream = grpc.StreamDesc{StreamName: "Put", ClientStreams: true}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: klio-go-bench server|play [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(os.Args[2:])
	case "play":
		err = play(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (server or play)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "klio-go-bench:", err)
		os.Exit(1)
	}
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

// tuneSocket sets the 1 MiB socket buffer hint, as Klio does, and no delay.
func tuneSocket(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(socketBuffer)
		_ = tcp.SetWriteBuffer(socketBuffer)
		_ = tcp.SetNoDelay(true)
	}
}

// tunedListener applies tuneSocket to every accepted connection.
type tunedListener struct{ net.Listener }

func (l tunedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		tuneSocket(c)
	}
	return c, err
}

// cpuSeconds is this process's user+system time (for logs only: the bench
// reads /proc itself).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func withDeadline(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
