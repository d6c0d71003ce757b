// Package zlog bridges log/slog to zerolog: the services log with zerolog, and hand the
// packages that take a *slog.Logger (pkg/operator) a logger whose records come out in the
// same JSON shape (level, time, message and fields) through the same zerolog writer.
package zlog
