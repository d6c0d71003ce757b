// Package lograte rate-limits repeated log lines: the first line of a kind goes out at
// once, the ones that follow within a period are counted instead, and one line at the end
// of the period says how many there were. Services use one Limiter for every warning that
// input from outside or a long outage can repeat (garbage acks, failed retries), so that
// 2 000 identical causes make two lines, not 2 000.
package lograte
