package loop

import (
	"errors"
)

// ErrFenced is returned by a Backend when a write shows that another coordinator has
// moved the job past this one: this coordinator must stop coordinating the job at once.
var ErrFenced = errors.New("coordinator fenced: another coordinator has moved the job on")

// ErrManifestsLost is returned (wrapped) by a Backend when the job's newest manifest is
// gone though checkpoints of the job completed before: CAIRN_MANIFESTS or its keys were
// deleted, or the bucket was created again. Nothing was written.
var ErrManifestsLost = errors.New("the job's manifests are lost")

// ErrSavepointExists is returned by Backend.WriteSavepoint when the name is in use.
var ErrSavepointExists = errors.New("savepoint name in use")

// ErrorKind says why the loop refused or failed a request; the service turns it into the
// reply's error code.
type ErrorKind int

// The kinds of Error.
const (
	// Unavailable: the request may succeed later (no lease, storage failed, stopping).
	Unavailable ErrorKind = iota + 1
	// Conflict: the request clashes with the job's state (a name in use, an active member).
	Conflict
	// NotFound: what the request names does not exist.
	NotFound
)

// Error is a request the loop refused or could not carry out, with a message that says
// what the caller can rely on.
type Error struct {
	// Kind says why.
	Kind ErrorKind
	// Msg says what happened and what the caller can rely on.
	Msg string
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }
