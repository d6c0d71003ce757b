package cairnjs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the streams, buckets and object store of the wire contract.
const (
	ConfigStream     = "CAIRN_CONFIG"
	CheckpointStream = "CAIRN_CHECKPOINTS"
	InputStream      = "CAIRN_INPUT"
	OutputStream     = "CAIRN_OUTPUT"
	DeadLetterStream = "CAIRN_DEADLETTER"
	ManifestBucket   = "CAIRN_MANIFESTS"
	LeaseBucket      = "CAIRN_LEASES"
	InstanceBucket   = "CAIRN_INSTANCES"
	// SnapshotBucket is the object store every job's snapshots went to before each job
	// had its own (SnapshotStore). Nothing creates it any more; references to its objects
	// (messages.SnapshotRef with an empty Store) are restored and retained from it while
	// retained checkpoints hold them (docs/compatibility.md).
	SnapshotBucket = "CAIRN_SNAPSHOTS"
	// snapshotStorePrefix starts the name of a job's snapshot store.
	snapshotStorePrefix = SnapshotBucket + "_"
)

// SnapshotStore is the name of job's snapshot object store, CAIRN_SNAPSHOTS_<job>: each
// job has its own, so that a NATS permission can give an operator's credential its own
// job's snapshots and no other's (object subjects, $O.<store>.C.<nuid> and
// $O.<store>.M.<base64 name>, say nothing of the job within one store). Job names are
// tokens [A-Za-z0-9_-]{1,64}, which bucket names allow.
func SnapshotStore(job string) string { return snapshotStorePrefix + job }

// SnapshotStoreFor is the store job's snapshots are uploaded into: the job's own
// (SnapshotStore), or with shared the store every job shares (SnapshotBucket).
func SnapshotStoreFor(job string, shared bool) string {
	if shared {
		return SnapshotBucket
	}
	return SnapshotStore(job)
}

// SnapshotStoreOf returns the store a snapshot reference's object is in: its Store, or
// SnapshotBucket for a reference written before stores were per job (empty Store).
func SnapshotStoreOf(store string) string {
	if store == "" {
		return SnapshotBucket
	}
	return store
}

// ObjectStream is the name of the stream that holds object store bucket.
func ObjectStream(bucket string) string { return "OBJ_" + bucket }

// Options configures the resources Ensure creates. Existing resources are used as they
// are and never updated, so a service with no right to change a stream can still start.
type Options struct {
	// Subjects gives the prefix of the stream subjects.
	Subjects Subjects
	// Replicas of every stream, bucket and object store; 0 means 1.
	Replicas int
	// LeaseTTL is how long a registration or lease lives after its last renewal; 0 means
	// DefaultLeaseTTL. Fixed when CAIRN_LEASES is created.
	LeaseTTL time.Duration
	// ConfigHistory is how many config versions per job CAIRN_CONFIG keeps; 0 means 10000.
	ConfigHistory int64
	// Memory stores everything in memory instead of files (tests and benchmarks); it caps
	// CAIRN_OUTPUT at MemoryOutputMaxBytes, since JetStream reserves a stream's MaxBytes.
	Memory bool
	// LookupOnly makes Ensure fail with ErrMissing instead of creating a missing
	// resource, for services without the right to create streams (operators, loadgen).
	LookupOnly bool
	// MarkerTTL is how long the markers of purged manifests and counters stay in
	// CAIRN_MANIFESTS (its LimitMarkerTTL); 0 means DefaultMarkerTTL. Fixed when the bucket
	// is created; tests shorten it.
	MarkerTTL time.Duration
	// SnapshotMaxBytes is the size limit of each job's snapshot store (SnapshotStore), set
	// by EnsureSnapshotStore when it creates one; an upload that does not fit is refused
	// (the checkpoint aborts with storage_full). 0 or -1 means no limit of its own: the
	// account's and the server's storage limits bound the store, and a full server is
	// reported as storage_full too. JetStream reserves a stream's MaxBytes whether used or
	// not, so the limits of every job's store together must fit the server's
	// max_file_store (or max_memory_store) besides CAIRN_OUTPUT's. Fixed when a store is
	// created.
	SnapshotMaxBytes int64
	// SharedSnapshotStore puts every job's snapshots in the one store SnapshotBucket
	// instead of a store per job (SnapshotStoreFor): what cairn dev runs, plain on
	// loopback, where no permission keeps jobs apart anyway. The coordinator creates that
	// store; operators must be given the same choice (operator.Config.SharedSnapshotStore).
	SharedSnapshotStore bool
	// Only restricts Ensure to these resources (stream or bucket names, e.g. InputStream,
	// ManifestBucket); the others stay nil in Resources. Empty means all. A service that
	// looks up only what it uses needs no rights on the rest.
	Only []string
}

// wants reports whether Ensure handles the named resource.
func (o Options) wants(name string) bool { return len(o.Only) == 0 || slices.Contains(o.Only, name) }

// ErrMissing is returned (wrapped) by Ensure with LookupOnly when a resource does not
// exist yet.
var ErrMissing = errors.New("resource does not exist yet")

// Limits of CAIRN_OUTPUT. They also bound exactly-once output: a restored operator reads
// the newest output of each of its subjects to know which replayed outputs are stored, so
// an operator restored from state older than every output a subject still holds stores
// those outputs again (the duplicate window only drops retried publishes). When the
// stream reaches MaxBytes the oldest outputs are discarded (never new ones refused).
// CAIRN_INPUT has no limits: Cairn trims each member's input below the oldest retained
// checkpoint that holds it, and a limit would remove input a restore still needs.
const (
	// OutputMaxAge is how long CAIRN_OUTPUT keeps an output.
	OutputMaxAge = 24 * time.Hour
	// OutputMaxBytes is CAIRN_OUTPUT's size limit.
	OutputMaxBytes = 1 << 30
	// MemoryOutputMaxBytes is CAIRN_OUTPUT's size limit with Options.Memory.
	MemoryOutputMaxBytes = 64 << 20
	// DuplicateWindow is the duplicate window of every Cairn stream.
	DuplicateWindow = 2 * time.Minute
)

// Limits of CAIRN_DEADLETTER, the input records operators could not process. It has no
// MaxBytes: JetStream reserves a stream's MaxBytes from the server's store when the stream
// is created, and a deployment sized for the other streams would then refuse to create
// it. Each dead letter holds at most one message of the server's max_payload.
const (
	// DeadLetterMaxAge is how long CAIRN_DEADLETTER keeps a dead letter.
	DeadLetterMaxAge = 7 * 24 * time.Hour
	// DeadLettersPerInstance is how many dead letters CAIRN_DEADLETTER keeps per instance
	// (per subject); beyond it the oldest go.
	DeadLettersPerInstance = 1000
)

// Defaults of the storage bounds.
const (
	// DefaultMarkerTTL is Options.MarkerTTL's default: a purged manifest's marker is gone
	// within it. No Cairn service watches manifests, so it is short: at 10 checkpoints a
	// second a job keeps about 50 markers.
	DefaultMarkerTTL = 5 * time.Second
)

// DefaultLeaseTTL is the TTL of registrations and leases when Options.LeaseTTL is 0.
const DefaultLeaseTTL = 5 * time.Second

// Resources are the streams and buckets every job shares. Each job's snapshot store is
// apart (EnsureSnapshotStore).
type Resources struct {
	Config      jetstream.Stream
	Checkpoints jetstream.Stream
	Input       jetstream.Stream
	Output      jetstream.Stream
	DeadLetter  jetstream.Stream
	Manifests   jetstream.KeyValue
	Leases      jetstream.KeyValue
	Instances   jetstream.KeyValue
}

func (o Options) storage() jetstream.StorageType {
	if o.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

func (o Options) outputMaxBytes() int64 {
	if o.Memory {
		return MemoryOutputMaxBytes
	}
	return OutputMaxBytes
}

func (o Options) markerTTL() time.Duration {
	if o.MarkerTTL <= 0 {
		return DefaultMarkerTTL
	}
	return max(o.MarkerTTL, time.Second)
}

func (o Options) snapshotMaxBytes() int64 {
	if o.SnapshotMaxBytes > 0 {
		return o.SnapshotMaxBytes
	}
	return -1
}

func (o Options) replicas() int { return max(o.Replicas, 1) }

// StreamConfigs returns the configs of the streams Ensure creates.
func (o Options) StreamConfigs() []jetstream.StreamConfig {
	hist := o.ConfigHistory
	if hist <= 0 {
		hist = 10000
	}
	s := o.Subjects
	return []jetstream.StreamConfig{
		{
			Name:              ConfigStream,
			Description:       "Cairn config events: the versioned audit log of every job's checkpoint settings",
			Subjects:          []string{s.ConfigEvents(">")},
			MaxMsgsPerSubject: hist,
			Storage:           o.storage(),
			Replicas:          o.replicas(),
			Duplicates:        DuplicateWindow,
			DenyDelete:        true,
		},
		{
			Name:              CheckpointStream,
			Description:       "Cairn checkpoint events: completed and aborted checkpoints",
			Subjects:          []string{s.join("checkpoints", ">")},
			MaxMsgsPerSubject: 10000,
			MaxAge:            7 * 24 * time.Hour,
			Storage:           o.storage(),
			Replicas:          o.replicas(),
			Duplicates:        DuplicateWindow,
		},
		{
			Name:        InputStream,
			Description: "Cairn operator input events; trimmed by the coordinator below the oldest retained checkpoint of each member",
			Subjects:    []string{s.join("input", ">")},
			Storage:     o.storage(),
			Replicas:    o.replicas(),
			Duplicates:  DuplicateWindow,
		},
		{
			Name:        OutputStream,
			Description: "Cairn operator outputs; a restored operator does not store again the outputs it replays",
			Subjects:    []string{s.join("output", ">")},
			MaxAge:      OutputMaxAge,
			MaxBytes:    o.outputMaxBytes(),
			Discard:     jetstream.DiscardOld,
			Storage:     o.storage(),
			Replicas:    o.replicas(),
			Duplicates:  DuplicateWindow,
		},
		{
			Name:              DeadLetterStream,
			Description:       "Cairn dead letters: input records an operator could not process, with their position and error, one subject per instance",
			Subjects:          []string{s.DeadLetter("*", "*")},
			MaxAge:            DeadLetterMaxAge,
			MaxMsgsPerSubject: DeadLettersPerInstance,
			Discard:           jetstream.DiscardOld,
			Storage:           o.storage(),
			Replicas:          o.replicas(),
			Duplicates:        DuplicateWindow,
		},
	}
}

// Ensure looks up every resource and creates the missing ones. It is idempotent and safe to
// run from several processes at once.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) (*Resources, error) {
	var r Resources
	streams := []*jetstream.Stream{&r.Config, &r.Checkpoints, &r.Input, &r.Output, &r.DeadLetter}
	for i, cfg := range o.StreamConfigs() {
		if !o.wants(cfg.Name) {
			continue
		}
		st, err := ensureStream(ctx, js, cfg, o.LookupOnly)
		if err != nil {
			return nil, err
		}
		*streams[i] = st
	}
	ttl := o.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	var err error
	if o.wants(ManifestBucket) {
		r.Manifests, err = ensureKV(ctx, js, o.LookupOnly, jetstream.KeyValueConfig{
			Bucket:         ManifestBucket,
			Description:    "Cairn manifests (<job>.<id>, <job>.latest) and checkpoint id counters (<job>.counter)",
			History:        1,
			LimitMarkerTTL: o.markerTTL(),
			Storage:        o.storage(),
			Replicas:       o.replicas(),
		})
		if err != nil {
			return nil, err
		}
	}
	if o.wants(LeaseBucket) {
		r.Leases, err = ensureKV(ctx, js, o.LookupOnly, jetstream.KeyValueConfig{
			Bucket:         LeaseBucket,
			Description:    "Cairn instance registrations (instance.<job>.<instance>) and coordinator leases (leader.<job>)",
			History:        1,
			TTL:            ttl,
			LimitMarkerTTL: max(ttl, time.Second),
			Storage:        o.storage(),
			Replicas:       o.replicas(),
		})
		if err != nil {
			return nil, err
		}
	}
	if o.wants(InstanceBucket) {
		r.Instances, err = ensureKV(ctx, js, o.LookupOnly, jetstream.KeyValueConfig{
			Bucket:      InstanceBucket,
			Description: "Cairn instance records (<job>.<instance>): the newest incarnation of each operator instance and whether it is a member; never expire",
			History:     1,
			Storage:     o.storage(),
			Replicas:    o.replicas(),
		})
		if err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// SnapshotStoreConfig is the config EnsureSnapshotStore creates job's snapshot store with.
func (o Options) SnapshotStoreConfig(job string) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      SnapshotStoreFor(job, o.SharedSnapshotStore),
		Description: "Cairn snapshots, <job>/<checkpoint>/<instance>/<incarnation>",
		MaxBytes:    o.snapshotMaxBytes(),
		Storage:     o.storage(),
		Replicas:    o.replicas(),
	}
}

// EnsureSnapshotStore looks up job's snapshot store (SnapshotStoreFor) and creates it when
// it is missing, unless o.LookupOnly (then ErrMissing, wrapped). The coordinator creates
// it when it first coordinates the job; operators only look it up. An existing store is
// used as it is.
func EnsureSnapshotStore(ctx context.Context, js jetstream.JetStream, o Options, job string) (jetstream.ObjectStore, error) {
	cfg := o.SnapshotStoreConfig(job)
	obs, err := ensureObjectStore(ctx, js, o.LookupOnly, cfg)
	if IsStorageFull(err) && cfg.MaxBytes > 0 {
		err = fmt.Errorf("%w: JetStream reserves the store's size limit of %d bytes; lower it (--snapshot-max-bytes, CAIRN_SNAPSHOT_MAX_BYTES) or raise the server's max_file_store", err, cfg.MaxBytes)
	}
	return obs, err
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, lookupOnly bool) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %s: %w", cfg.Name, err)
	}
	if lookupOnly {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, ErrMissing)
	}
	st, err = js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

func ensureKV(ctx context.Context, js jetstream.JetStream, lookupOnly bool, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("look up bucket %s: %w", cfg.Bucket, err)
	}
	if lookupOnly {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, ErrMissing)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

func ensureObjectStore(ctx context.Context, js jetstream.JetStream, lookupOnly bool, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, cfg.Bucket)
	if err == nil {
		return obs, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up object store %s: %w", cfg.Bucket, err)
	}
	if lookupOnly {
		return nil, fmt.Errorf("object store %s: %w", cfg.Bucket, ErrMissing)
	}
	obs, err = js.CreateObjectStore(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		obs, err = js.ObjectStore(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create object store %s: %w", cfg.Bucket, err)
	}
	return obs, nil
}

// ManifestKey is the key of checkpoint id's manifest of job in CAIRN_MANIFESTS.
func ManifestKey(job string, id uint64) string { return fmt.Sprintf("%s.%d", job, id) }

// LatestKey is the key of job's newest manifest in CAIRN_MANIFESTS.
func LatestKey(job string) string { return job + ".latest" }

// SavepointKey is the key of job's savepoint name in CAIRN_MANIFESTS: it holds the
// savepoint's manifest.
func SavepointKey(job, name string) string { return job + ".savepoint." + name }

// CounterKey is the key of job's checkpoint id counter in CAIRN_MANIFESTS.
func CounterKey(job string) string { return job + ".counter" }

// RegistrationKey is the key of an instance's registration in CAIRN_LEASES ("*" wildcards).
func RegistrationKey(job, instance string) string { return "instance." + job + "." + instance }

// InstanceKey is the key of an instance's record in CAIRN_INSTANCES.
func InstanceKey(job, instance string) string { return job + "." + instance }

// LeaseKey is the key of job's coordinator lease in CAIRN_LEASES.
func LeaseKey(job string) string { return "leader." + job }

// ObjectName is the object store name of the snapshot incarnation of an instance took for
// a checkpoint: <job>/<checkpoint>/<instance>/<incarnation>. The incarnation makes it a name
// no other process can produce, so an upload never replaces another process's object.
func ObjectName(job string, id uint64, instance, incarnation string) string {
	return fmt.Sprintf("%s/%d/%s/%s", job, id, instance, incarnation)
}
