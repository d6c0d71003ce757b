package cairnjs

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream error codes that mean a stream or the server has no room for a message.
const (
	// errCodeStoreFailed is JSStreamStoreFailedF, a generic store failure; its
	// description tells a full stream ("maximum bytes exceeded") from other failures.
	errCodeStoreFailed jetstream.ErrorCode = 10077
	// errCodeAccountResources is JSAccountResourcesExceededErr.
	errCodeAccountResources jetstream.ErrorCode = 10002
	// errCodeInsufficientResources is JSInsufficientResourcesErr.
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	// errCodeStorageResources is JSStorageResourcesExceededErr.
	errCodeStorageResources jetstream.ErrorCode = 10047
)

// maxBytesExceeded is the server's description of a store refused by a stream's MaxBytes
// with the DiscardNew policy (the object store's), under errCodeStoreFailed.
const maxBytesExceeded = "maximum bytes exceeded"

// IsStorageFull reports whether err (or an error it wraps) is JetStream refusing a
// message for want of space: the stream's MaxBytes (a snapshot store's size limit) or the
// account's or server's storage limit. Measured on nats-server 2.15: an object store Put
// into a full store fails with API error 10077 "maximum bytes exceeded"; its chunks are
// purged, but its meta message may remain (an object without chunks, which coordinator
// retention removes like any orphan).
func IsStorageFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeAccountResources, errCodeInsufficientResources, errCodeStorageResources:
		return true
	case errCodeStoreFailed:
		return apiErr.Description == maxBytesExceeded
	}
	return false
}
