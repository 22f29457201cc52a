package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

type walFile struct {
	path, name string
	size       int64
}

// play sends every regular file of a directory, in name order, with -j
// jobs, one connection per job and one Put stream per file.
func play(args []string) error {
	fs := flag.NewFlagSet("play", flag.ExitOnError)
	addr := fs.String("addr", "", "server host:port")
	caPath := fs.String("ca", "", "CA that signs the server certificate (PEM)")
	certPath := fs.String("cert", "", "client certificate (PEM)")
	keyPath := fs.String("key", "", "client key (PEM)")
	jobs := fs.Int("j", 1, "parallel uploads, one connection each")
	blockKiB := fs.Int("block", 2048, "block size in KiB (1 to 8192)")
	cluster := fs.String("cluster", "walplayer", "cluster name")
	timeout := fs.Duration("timeout", 5*time.Minute, "longest one file may take")
	pace := fs.Duration("pace", 0, "wait this long before each block but the first, holding the upload open as a WAL sender does (0: as fast as the server takes them)")
	aes256 := fs.Bool("aes256", false, "TLS 1.2 with ECDHE-ECDSA-AES256-GCM only (Go's TLS 1.3 client always prefers AES-128-GCM; rustls prefers AES-256-GCM)")
	_ = fs.Parse(args)
	if fs.NArg() != 1 || *addr == "" || *jobs < 1 {
		return fmt.Errorf("play: need -addr, -j >= 1 and one directory")
	}
	block := *blockKiB << 10
	if block < 1 || block > maxBlock {
		return fmt.Errorf("play: block must be 1 to 8192 KiB")
	}
	files, err := listFiles(fs.Arg(0))
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(*certPath, *keyPath)
	if err != nil {
		return err
	}
	pool, err := loadPool(*caPath)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return err
	}
	config := &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	}
	if *aes256 {
		config.MaxVersion = tls.VersionTLS12
		config.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	}
	creds := credentials.NewTLS(config)
	start := time.Now()
	conns := make([]*grpc.ClientConn, *jobs)
	for i := range conns {
		if conns[i], err = dial(*addr, creds); err != nil {
			return err
		}
		defer conns[i].Close()
	}
	var next, acked, ok int64
	var failed sync.Map
	var cipher atomic.Value
	cipher.Store("unknown")
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Add(1)
		go func(conn *grpc.ClientConn) {
			defer wg.Done()
			buf := make([]byte, block)
			for {
				i := atomic.AddInt64(&next, 1) - 1
				if i >= int64(len(files)) {
					return
				}
				f := files[i]
				n, err := putFile(conn, f, *cluster, buf, *pace, *timeout, &cipher)
				if err != nil {
					failed.Store(f.name, err)
					continue
				}
				atomic.AddInt64(&acked, n)
				atomic.AddInt64(&ok, 1)
			}
		}(conn)
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	fails := 0
	failed.Range(func(k, v interface{}) bool {
		fails++
		fmt.Fprintf(os.Stderr, "%s: %v\n", k, v)
		return true
	})
	fmt.Printf("files %d bytes %d seconds %.3f cipher %s\n", ok, acked, seconds, cipher.Load())
	if fails > 0 {
		return fmt.Errorf("%d of %d files failed", fails, len(files))
	}
	return nil
}

func listFiles(dir string) ([]walFile, error) {
	entries, err := ioutil.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []walFile
	for _, e := range entries {
		if e.Mode().IsRegular() {
			files = append(files, walFile{filepath.Join(dir, e.Name()), e.Name(), e.Size()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, nil
}

func dial(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	ctx, cancel := withDeadline(connectBudget)
	defer cancel()
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			tuneSocket(c)
		}
		return c, err
	}
	return grpc.DialContext(ctx, addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(dialer),
		grpc.WithBlock(),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(socketBuffer),
		grpc.WithWriteBufferSize(socketBuffer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
	)
}

// putFile streams one file in blocks read into buf (reused: SendMsg has
// encoded the message before it returns), pace apart, and checks
// written_size.
func putFile(conn *grpc.ClientConn, f walFile, cluster string, buf []byte, pace, timeout time.Duration, cipher *atomic.Value) (int64, error) {
	in, err := os.Open(f.path)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var remote peer.Peer
	stream, err := conn.NewStream(ctx, &putStream, putMethod, grpc.Peer(&remote))
	if err != nil {
		return 0, err
	}
	var sent int64
	for {
		n, err := io.ReadFull(in, buf)
		if n > 0 && sent > 0 && pace > 0 {
			time.Sleep(pace)
		}
		if n > 0 {
			req := PutRequest{ClusterName: cluster, WalName: f.name, WalBlock: buf[:n], SegmentSize: uint64(f.size)}
			if err := stream.SendMsg(&req); err != nil {
				if err == io.EOF {
					break // the server answered early: RecvMsg has its status
				}
				return sent, err
			}
			sent += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return sent, err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return sent, err
	}
	var res PutResult
	if err := stream.RecvMsg(&res); err != nil {
		return sent, err
	}
	if cipher.Load() == "unknown" {
		if info, ok := remote.AuthInfo.(credentials.TLSInfo); ok {
			cipher.Store(tls.CipherSuiteName(info.State.CipherSuite))
		}
	}
	if int64(res.WrittenSize) != sent || sent != f.size {
		return sent, fmt.Errorf("incomplete WAL file: server stored %d of the %d bytes sent (file %d)", res.WrittenSize, sent, f.size)
	}
	return sent, nil
}
