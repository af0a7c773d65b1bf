package build

import "time"

// Message is one delivery of a queue message, as a queue adapter hands it to
// the dispatcher.
type Message struct {
	// ID is the queue's message ID, the same on every redelivery.
	ID string
	// Receipt identifies this delivery for Delete and ChangeVisibility; it is
	// stale once the message becomes visible again and is received anew.
	Receipt string
	// GroupID is the FIFO message group: the lock key.
	GroupID string
	Body    []byte
	// ReceiveCount counts deliveries, this one included (1 on the first).
	ReceiveCount int
	// SentAt is when the message was first enqueued.
	SentAt time.Time
}

// QueueStats describes a queue at one moment.
type QueueStats struct {
	// Visible messages wait to be received.
	Visible int `json:"visible"`
	// InFlight messages were received and are neither deleted nor visible
	// again: being decided, or deferred.
	InFlight int `json:"inFlight"`
	// DeadLettered messages sit in the dead-letter queue.
	DeadLettered int `json:"deadLettered"`
	// OldestAge is the age of the oldest message not yet deleted.
	OldestAge time.Duration `json:"oldestAgeNanos"`
}

// Lease is a held branch lock: at most one per lock key. Each held lease also
// occupies one slot of the cluster-wide concurrency cap.
type Lease struct {
	Key        string    `json:"lockKey"`
	BuildID    ID        `json:"buildId"`
	Owner      string    `json:"owner"`
	AcquiredAt time.Time `json:"acquiredAt"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

// Job is everything an executor needs to start one build.
type Job struct {
	Request       Request
	Descriptor    Descriptor
	CatalogCommit string
	Timeout       time.Duration
}

// Outcome is how a build ended, as an executor observed it.
type Outcome struct {
	BuildID    ID
	PodName    string
	Team       string
	Project    string
	Ref        string
	Status     Status // a final status
	ExitCode   *int
	Reason     string
	StartedAt  time.Time
	FinishedAt time.Time
	// LogKey and ArtifactsKey are set when the objects were stored.
	LogKey       string
	ArtifactsKey string
}

// LockKey returns the outcome's "team/project/ref".
func (o Outcome) LockKey() string { return LockKey(o.Team, o.Project, o.Ref) }

// Project is one entry of the catalog: a buildable project with its
// descriptor, or an unbuildable one with the error that makes it so.
type Project struct {
	Team       string      `json:"team"`
	Project    string      `json:"project"`
	Descriptor *Descriptor `json:"descriptor,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Key returns "team/project".
func (p Project) Key() string { return ProjectKey(p.Team, p.Project) }
