// The two Klio messages a Put needs, marshalled by hand with protowire
// (field numbers and types from the protocol facts), and a gRPC codec
// registered under the name "proto" so both sides speak
// application/grpc+proto like any generated client or server.
//
// Marshal makes one buffer and copies the block into it, and Unmarshal
// copies the block out of the received message, as protobuf-go's
// generated code does by default: the baseline pays what a Go Klio pays.
package main

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
)

// PutRequest is klio.wal.v1.PutRequest.
type PutRequest struct {
	ClusterName string // 1
	WalName     string // 2
	WalBlock    []byte // 3
	SegmentSize uint64 // 4
	SendToTier2 bool   // 7
}

// PutResult is klio.wal.v1.PutResult.
type PutResult struct {
	WrittenSize uint64 // 1
}

func (m *PutRequest) size() int {
	n := 0
	if m.ClusterName != "" {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(m.ClusterName))
	}
	if m.WalName != "" {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(m.WalName))
	}
	if len(m.WalBlock) > 0 {
		n += protowire.SizeTag(3) + protowire.SizeBytes(len(m.WalBlock))
	}
	if m.SegmentSize != 0 {
		n += protowire.SizeTag(4) + protowire.SizeVarint(m.SegmentSize)
	}
	if m.SendToTier2 {
		n += protowire.SizeTag(7) + 1
	}
	return n
}

func (m *PutRequest) marshal() []byte {
	b := make([]byte, 0, m.size())
	if m.ClusterName != "" {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, m.ClusterName)
	}
	if m.WalName != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, m.WalName)
	}
	if len(m.WalBlock) > 0 {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, m.WalBlock)
	}
	if m.SegmentSize != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, m.SegmentSize)
	}
	if m.SendToTier2 {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

func (m *PutRequest) unmarshal(b []byte) error {
	*m = PutRequest{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.ClusterName, b = string(v), b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.WalName, b = string(v), b[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.WalBlock, b = append([]byte(nil), v...), b[n:]
		case num == 4 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.SegmentSize, b = v, b[n:]
		case num == 7 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.SendToTier2, b = v != 0, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}

func (m *PutResult) marshal() []byte {
	if m.WrittenSize == 0 {
		return []byte{}
	}
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	return protowire.AppendVarint(b, m.WrittenSize)
}

func (m *PutResult) unmarshal(b []byte) error {
	*m = PutResult{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.WrittenSize, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// codec replaces grpc-go's "proto" codec for the two message types above.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case *PutRequest:
		return m.marshal(), nil
	case *PutResult:
		return m.marshal(), nil
	}
	return nil, fmt.Errorf("codec: cannot marshal %T", v)
}

func (codec) Unmarshal(data []byte, v interface{}) error {
	switch m := v.(type) {
	case *PutRequest:
		return m.unmarshal(data)
	case *PutResult:
		return m.unmarshal(data)
	}
	return fmt.Errorf("codec: cannot unmarshal into %T", v)
}

func init() {
	encoding.RegisterCodec(codec{})
}
