// Package configlog reads a job's config in force from CAIRN_CONFIG in a bounded number of
// reads, whatever else was published on the job's subject. configsvc and the coordinator
// share it.
//
// A job has two subjects there: its events (cairn.config.events.<job>), one per accepted
// version, and its head (cairn.config.events.<job>.head), a copy of the newest event that
// configsvc writes after each. The config in force is the newer of the head and the events
// subject's last message when that is a valid event (it is newer when configsvc stopped
// between the two publishes). Messages that are not valid config events of the job
// (garbage, another job's event, values out of range) are skipped, so one bad record
// neither resets a job to the defaults nor blocks its next version, and as many of them
// as the stream keeps per subject cannot push the version in force out: the head is on a
// subject of its own.
//
// Only a job without a usable head reads back through a subject, one direct get per
// message: its events subject when a deployment from before heads has an invalid last
// message (until configsvc writes the head), or its head subject when something other
// than configsvc published there (the shipped auth configs forbid it).
package configlog
