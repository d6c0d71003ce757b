package operator_test

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/cairn-stream/cairn/pkg/operator"
)

// gateMachine counts records; its snapshots block in Persist until gate is closed.
type gateMachine struct {
	applied    int
	snapshots  int
	gate       chan struct{}
	persisting chan struct{}
	once       sync.Once
}

func (m *gateMachine) Apply(operator.Record) error { m.applied++; return nil }

func (m *gateMachine) Snapshot() (operator.Snapshot, error) {
	m.snapshots++
	return &gateSnapshot{m: m, applied: m.applied}, nil
}

func (m *gateMachine) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(string(data))
	if err != nil {
		return err
	}
	m.applied = n
	return nil
}

type gateSnapshot struct {
	m       *gateMachine
	applied int
}

func (s *gateSnapshot) Persist(w io.Writer) error {
	s.m.once.Do(func() { close(s.m.persisting) })
	<-s.m.gate
	_, err := io.WriteString(w, strconv.Itoa(s.applied))
	return err
}

func (s *gateSnapshot) Release() {}

// blobMachine holds one large byte slice: each record replaces it with its data repeated
// to size bytes.
type blobMachine struct {
	size  int
	state []byte
}

func (m *blobMachine) Apply(rec operator.Record) error {
	m.state = bytes.Repeat(rec.Data, m.size/len(rec.Data)+1)[:m.size]
	return nil
}

func (m *blobMachine) Snapshot() (operator.Snapshot, error) {
	return &blobSnapshot{data: bytes.Clone(m.state)}, nil
}

func (m *blobMachine) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.state = data
	return nil
}

type blobSnapshot struct{ data []byte }

func (s *blobSnapshot) Persist(w io.Writer) error {
	_, err := w.Write(s.data)
	return err
}

func (s *blobSnapshot) Release() { s.data = nil }

// failingMachine fails Snapshot or Persist; released counts released snapshots.
type failingMachine struct {
	snapshotErr, persistErr error
	mu                      sync.Mutex
	released                int
}

func (m *failingMachine) Apply(operator.Record) error { return nil }

func (m *failingMachine) Snapshot() (operator.Snapshot, error) {
	if m.snapshotErr != nil {
		return nil, m.snapshotErr
	}
	return &failingSnapshot{m: m}, nil
}

func (m *failingMachine) Restore(io.Reader) error { return errors.New("nothing to restore") }

func (m *failingMachine) releasedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.released
}

type failingSnapshot struct{ m *failingMachine }

func (s *failingSnapshot) Persist(w io.Writer) error {
	if _, err := io.WriteString(w, "partial"); err != nil {
		return err
	}
	return s.m.persistErr
}

func (s *failingSnapshot) Release() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.released++
}
