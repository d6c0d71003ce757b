// Package store is the coordinator's storage on JetStream, the only place that knows the
// bucket and stream layouts: Backend implements loop.Backend (the checkpoint id counter and
// manifests in KV CAIRN_MANIFESTS, savepoints, instance records, barriers, checkpoint,
// member and alarm events) and runs a job's retention worker, which deletes manifests and
// snapshot objects no retained checkpoint needs and trims the members' input below them
// (Trimmer). JobStores opens a job's snapshot object stores; LeaseKeeper competes for and
// renews a job's lease in KV CAIRN_LEASES.
package store
