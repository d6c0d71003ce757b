// Package retry retries an operation with exponential backoff until it succeeds or its
// context ends: the loop Cairn's operator runtime waits for its streams and buckets with,
// and the one the services and examples use for their own setup while NATS or JetStream
// come up. Doubling is the same backoff for waits that grow with each repeat outside such
// a loop.
package retry
