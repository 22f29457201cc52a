package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// sink discards every block, checks that each message of a stream repeats
// the same cluster, WAL name and segment size, and answers written_size.
type sink struct {
	files, bytes, rejected int64
	peers                  sync.Map // client address -> true, to log each connection once
}

func (s *sink) put(_ interface{}, stream grpc.ServerStream) error {
	s.noteCipher(stream)
	var first, msg PutRequest
	var written uint64
	for n := 0; ; n++ {
		err := stream.RecvMsg(&msg)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if n == 0 {
			first = PutRequest{ClusterName: msg.ClusterName, WalName: msg.WalName, SegmentSize: msg.SegmentSize}
			if first.SegmentSize == 0 || first.ClusterName == "" || first.WalName == "" {
				atomic.AddInt64(&s.rejected, 1)
				return status.Error(codes.InvalidArgument, "missing cluster_name, wal_name or segment_size")
			}
		} else if msg.ClusterName != first.ClusterName || msg.WalName != first.WalName || msg.SegmentSize != first.SegmentSize {
			atomic.AddInt64(&s.rejected, 1)
			return status.Error(codes.InvalidArgument, "incoherent cluster_name, wal_name or segment_size")
		}
		written += uint64(len(msg.WalBlock))
	}
	if written > 0 {
		atomic.AddInt64(&s.files, 1)
		atomic.AddInt64(&s.bytes, int64(written))
	}
	return stream.SendMsg(&PutResult{WrittenSize: written})
}

func (s *sink) noteCipher(stream grpc.ServerStream) {
	p, ok := peer.FromContext(stream.Context())
	if !ok {
		return
	}
	if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		if _, seen := s.peers.LoadOrStore(p.Addr.String(), true); !seen {
			fmt.Fprintf(os.Stderr, "cipher %s peer %s\n", tls.CipherSuiteName(info.State.CipherSuite), p.Addr)
		}
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	certPath := fs.String("cert", "", "server certificate (PEM)")
	keyPath := fs.String("key", "", "server key (PEM)")
	caPath := fs.String("ca", "", "CA that signs client certificates (PEM)")
	_ = fs.Parse(args)
	cert, err := tls.LoadX509KeyPair(*certPath, *keyPath)
	if err != nil {
		return err
	}
	pool, err := loadPool(*caPath)
	if err != nil {
		return err
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	})
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	s := &sink{}
	server := grpc.NewServer(
		grpc.Creds(creds),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(socketBuffer),
		grpc.WriteBufferSize(socketBuffer),
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.MaxSendMsgSize(maxMessage),
	)
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: serviceName,
		HandlerType: (*interface{})(nil),
		Streams:     []grpc.StreamDesc{{StreamName: "Put", Handler: s.put, ClientStreams: true}},
	}, s)
	fmt.Printf("listening on %s\n", lis.Addr())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		server.Stop()
	}()
	err = server.Serve(tunedListener{lis})
	fmt.Fprintf(os.Stderr, "files %d bytes %d rejected %d cpu %.2f s\n",
		atomic.LoadInt64(&s.files), atomic.LoadInt64(&s.bytes), atomic.LoadInt64(&s.rejected), cpuSeconds())
	if err == grpc.ErrServerStopped {
		return nil
	}
	return err
}
