// Package backoff computes waits that double with each attempt up to a bound: retries and
// repeats that must not hammer what they wait for, yet start soon.
package backoff
