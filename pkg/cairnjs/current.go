package cairnjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/retry"
)

// Requester sends a request and waits for its reply (*nats.Conn).
type Requester interface {
	RequestWithContext(ctx context.Context, subj string, data []byte) (*nats.Msg, error)
}

// CurrentMsg is a message read from a stream's leader.
type CurrentMsg struct {
	Subject  string
	Sequence uint64
	Header   nats.Header
	Data     []byte
	Time     time.Time
}

// errCodeMsgNotFound is JSNoMessageFoundErr.
const errCodeMsgNotFound jetstream.ErrorCode = 10037

// currentTimeout bounds a current read whose ctx has no deadline.
const currentTimeout = 5 * time.Second

// LastMsgCurrent reads the last message on subject of stream from the stream's leader,
// through $JS.API.STREAM.MSG.GET, never through a direct get that a lagging replica may
// answer. It is the read for values that must be current (a lease, an id counter, a
// registration): KV Get and Stream.GetLastMsgForSubject use direct gets on streams that
// allow them, as KV buckets do. It returns jetstream.ErrMsgNotFound when the subject holds
// no message.
func LastMsgCurrent(ctx context.Context, nc Requester, stream, subject string) (*CurrentMsg, error) {
	return getCurrent(ctx, nc, stream, msgGetRequest{LastFor: subject}, "the last message of "+subject)
}

// MsgCurrent reads the message at sequence seq of stream from the stream's leader, as
// LastMsgCurrent does; jetstream.ErrMsgNotFound when the stream does not hold it (never
// stored, deleted, purged or removed by a limit).
func MsgCurrent(ctx context.Context, nc Requester, stream string, seq uint64) (*CurrentMsg, error) {
	return getCurrent(ctx, nc, stream, msgGetRequest{Seq: seq}, fmt.Sprintf("message %d", seq))
}

// msgGetRequest is the body of $JS.API.STREAM.MSG.GET.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

func getCurrent(ctx context.Context, nc Requester, stream string, get msgGetRequest, what string) (*CurrentMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, currentTimeout)
		defer cancel()
	}
	req, err := json.Marshal(get)
	if err != nil {
		return nil, err
	}
	reply, err := leaderRequest(ctx, nc, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("read %s in %s from its leader: %w", what, stream, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("read %s in %s: undecodable reply: %w", what, stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == errCodeMsgNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("read %s in %s: %w", what, stream, resp.Error)
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("read %s in %s: %w", what, stream, jetstream.ErrInvalidJetStreamResponse)
	}
	m := resp.Message
	out := &CurrentMsg{Subject: m.Subject, Sequence: m.Sequence, Data: m.Data, Time: m.Time}
	if len(m.Header) > 0 {
		if out.Header, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("read %s in %s: headers: %w", what, stream, err)
		}
	}
	return out, nil
}

// kvOperation is the header a KV delete or purge marker carries; a marker the server
// writes when a key's TTL or the bucket's limits remove it carries
// jetstream.MarkerReasonHeader instead.
const kvOperation = "KV-Operation"

// CurrentEntry reads key of KV bucket from the bucket stream's leader (LastMsgCurrent)
// and returns its value and revision; jetstream.ErrKeyNotFound when the key is absent,
// deleted or purged, or expired: a bucket with LimitMarkerTTL leaves a marker with a
// Nats-Marker-Reason header (MaxAge, Purge, Remove) where a key expired or was removed,
// which nats.go's KV Get reports as deleted too.
func CurrentEntry(ctx context.Context, nc Requester, bucket, key string) ([]byte, uint64, error) {
	m, err := LastMsgCurrent(ctx, nc, "KV_"+bucket, "$KV."+bucket+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	if op := m.Header.Get(kvOperation); strings.EqualFold(op, "DEL") || strings.EqualFold(op, "PURGE") || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	return m.Data, m.Sequence, nil
}

// Backoff of leaderRequest while the stream has no leader.
const (
	leaderFirstWait = 25 * time.Millisecond
	leaderMaxWait   = 500 * time.Millisecond
)

// leaderRequest sends a JetStream API request that the stream's leader answers, again
// while no server answers or the reply says JetStream is temporarily unavailable (code
// 503: the stream is electing a leader, as after a node hung or restarted), until ctx
// ends. It returns the first other reply.
func leaderRequest(ctx context.Context, nc Requester, subject string, req []byte) (*nats.Msg, error) {
	for failures := 0; ; failures++ {
		reply, err := nc.RequestWithContext(ctx, subject, req)
		if err == nil && !unavailable(reply.Data) || err != nil && !errors.Is(err, nats.ErrNoResponders) {
			return reply, err
		}
		t := time.NewTimer(retry.Doubling(leaderFirstWait, failures, leaderMaxWait))
		select {
		case <-ctx.Done():
			t.Stop()
			if err == nil {
				return reply, nil
			}
			return nil, err
		case <-t.C:
		}
	}
}

// unavailable reports whether a JetStream API reply is an error with code 503.
func unavailable(data []byte) bool {
	var resp struct {
		Error *jetstream.APIError `json:"error"`
	}
	return json.Unmarshal(data, &resp) == nil && resp.Error != nil && resp.Error.Code == 503
}
