package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// objectPurger removes snapshot objects without leaving a marker behind. The object
// store's own Delete publishes a "deleted" meta message that stays for ever (one per
// retained-out snapshot); instead the object's chunks and then its meta subject are purged
// from the store's stream. A removal interrupted between the two purges leaves a meta
// without chunks, which the next full scan finds and removes again.
type objectPurger struct {
	// bucket is the object store's name; its stream is OBJ_<bucket>.
	bucket string
	// lookup returns a stream by name.
	lookup func(ctx context.Context, name string) (StreamPurger, error)
	stream StreamPurger
}

// Purge purges the chunks and then the meta subject of the object info describes.
func (o *objectPurger) Purge(ctx context.Context, info *jetstream.ObjectInfo) error {
	if o.stream == nil {
		st, err := o.lookup(ctx, cairnjs.ObjectStream(o.bucket))
		if err != nil {
			return fmt.Errorf("look up the stream of object store %s: %w", o.bucket, err)
		}
		o.stream = st
	}
	if info.NUID != "" {
		chunks := fmt.Sprintf("$O.%s.C.%s", o.bucket, info.NUID)
		if err := o.stream.Purge(ctx, jetstream.WithPurgeSubject(chunks)); err != nil {
			return fmt.Errorf("delete snapshot %s: purge its chunks: %w", info.Name, err)
		}
	}
	meta := metaSubject(o.bucket, info.Name)
	if err := o.stream.Purge(ctx, jetstream.WithPurgeSubject(meta)); err != nil {
		return fmt.Errorf("delete snapshot %s: purge its meta: %w", info.Name, err)
	}
	return nil
}

// metaSubject is the subject of object name's meta message in object store bucket.
func metaSubject(bucket, name string) string {
	return fmt.Sprintf("$O.%s.M.%s", bucket, base64.URLEncoding.EncodeToString([]byte(name)))
}

// infoBatch is how many objects one batched look-up asks for; the server answers at most
// 1024 messages a request.
const infoBatch = 256

// batchStore is a snapshot store with look-ups of many objects' infos in one request
// each: a batched direct get of their meta subjects' last messages (server 2.11+, the
// stream allows direct gets as every object store's does), and removals that leave no
// marker (objectPurger).
type batchStore struct {
	jetstream.ObjectStore
	nc     *nats.Conn
	bucket string
	purger objectPurger
}

var _ ObjectStore = (*batchStore)(nil)

// Purge removes the object info describes, leaving no marker.
func (s *batchStore) Purge(ctx context.Context, info *jetstream.ObjectInfo) error {
	return s.purger.Purge(ctx, info)
}

// Infos returns the infos of those of names that have a meta message, deleted objects
// included, by name.
func (s *batchStore) Infos(ctx context.Context, names []string) (map[string]*jetstream.ObjectInfo, error) {
	out := make(map[string]*jetstream.ObjectInfo, len(names))
	for batch := range slices.Chunk(names, infoBatch) {
		if err := s.lookup(ctx, batch, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// The headers of a status message (no payload) in the answers to a direct get.
const (
	statusHeader      = "Status"
	descriptionHeader = "Description"
)

// multiLastRequest is a batched direct get of the last message of each subject.
type multiLastRequest struct {
	MultiLast []string `json:"multi_last"`
	Batch     int      `json:"batch"`
}

// lookup adds to out the infos of names (at most infoBatch) found in one batched direct
// get: one message per meta subject found, then an end-of-batch status (204), or a 404
// when none is found.
func (s *batchStore) lookup(ctx context.Context, names []string, out map[string]*jetstream.ObjectInfo) error {
	req := multiLastRequest{MultiLast: make([]string, len(names)), Batch: len(names)}
	for i, name := range names {
		req.MultiLast[i] = metaSubject(s.bucket, name)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	// A channel just large enough for every answer (a synchronous subscription would
	// allocate one of 64 Ki entries for each look-up).
	answers := make(chan *nats.Msg, len(names)+1)
	inbox := s.nc.NewRespInbox()
	sub, err := s.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return fmt.Errorf("look up snapshots: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest("$JS.API.DIRECT.GET."+cairnjs.ObjectStream(s.bucket), inbox, data); err != nil {
		return fmt.Errorf("look up snapshots: %w", err)
	}
	for range len(names) + 1 {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-ctx.Done():
			return fmt.Errorf("look up snapshots: %w", ctx.Err())
		}
		if len(m.Data) == 0 && m.Header != nil {
			switch status := m.Header.Get(statusHeader); status {
			case "204":
				return nil
			case "404":
				return nil // none of them exists
			case "503":
				return fmt.Errorf("look up snapshots: %w: %s (no responders)", errStoreMissing, s.bucket)
			case "":
			default:
				return fmt.Errorf("look up snapshots: status %s %s", status, m.Header.Get(descriptionHeader))
			}
		}
		var info jetstream.ObjectInfo
		if err := json.Unmarshal(m.Data, &info); err != nil {
			return fmt.Errorf("look up snapshots: meta on %s: %w", m.Header.Get(jetstream.SubjectHeader), err)
		}
		out[info.Name] = &info
	}
	return errors.New("look up snapshots: no end of batch")
}
