package sandboxset

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/open-lambda/ol-shim/internal/names"
)

// Reasons the Set itself gives when it destroys a sandbox. Callers of
// Ref.Destroy give their own.
const (
	ReasonUnpauseFailed = "unpause failed"
	ReasonPauseFailed   = "pause failed"
	ReasonClosed        = "set closed"
	// ReasonUnclean: Mark or Sweep failed (see Cleaner): a process of a
	// run may be left in it.
	ReasonUnclean = "cleanup failed"
	ReasonIdleTTL = "idle ttl"
	ReasonShrink  = "shrink"
	ReasonEvicted = "evicted"
	ReasonLost    = "lost" // gone or stopped while idle (its container died, or its runtime restarted)
)

type backgroundKey struct{}

// WithBackground marks ctx as that of a create no caller waits for (a
// MinIdle refill). A Backend may then refuse at once rather than wait for
// room (IsBackground tells it).
func WithBackground(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx is that of a background create.
func IsBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// DefaultOpTimeout bounds the backend calls a Set makes without a caller's
// context: destroys and background creates.
const DefaultOpTimeout = 60 * time.Second

// ValidateName reports whether name can name a pool: 1 to 100 characters,
// letters, digits, '_', '.' and '-', starting with a letter or digit. Sandbox
// IDs are derived from it and must be valid Docker volume names.
func ValidateName(name string) error { return names.Pool(name) }

// The rule is compiled on first use: a counted repetition is costly to
// compile.
var sandboxIDRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}-[0-9a-f]{16}$`)
})

// ValidateSandboxID reports whether id is a sandbox ID a Set makes: its
// pool's name (see ValidateName), '-' and 16 hex digits; so at most 117
// characters, always one path element, never "." or "..".
func ValidateSandboxID(id string) error {
	if !sandboxIDRE().MatchString(id) {
		if len(id) > 130 {
			id = id[:130] + "..."
		}
		return fmt.Errorf("sandbox ID %q: want a pool name, '-' and 16 hex digits", id)
	}
	return nil
}

// Config configures a Set.
type Config struct {
	// Name names the pool in sandbox IDs, errors and logs; see ValidateName.
	Name string
	// Backend creates the pool's sandboxes. Required.
	Backend Backend
	// Scratch makes each sandbox's scratch directory. Required.
	Scratch ScratchMaker
	// Parent, if set, is the Set new sandboxes are forked from; Backend must
	// then implement Forker.
	Parent *Set
	// MinIdle is the number of idle sandboxes kept ready; the Set refills
	// in the background after Gets.
	MinIdle int
	// MaxSize bounds the sandboxes that exist at once, idle or in use; 0
	// means no bound. When it is reached, Gets wait in arrival order.
	MaxSize int
	// IdleTTL, if positive, destroys idle sandboxes unused for longer,
	// never going below MinIdle.
	IdleTTL time.Duration
	// PauseGrace keeps a returned sandbox unpaused this long, so a Get in
	// that time takes it with no backend call. 0 pauses at once.
	PauseGrace time.Duration
	// Reaper, if set, holds back DestroyDeferred's destroys while creates
	// are waited for; Sets of one runtime share it. Nil: destroys are done
	// at once.
	Reaper *Reaper
	// OpTimeout bounds the creates and destroys the Set makes without a
	// caller's context; DefaultOpTimeout if 0.
	OpTimeout time.Duration
	// Creates, if set, bounds the creates in flight at once; Sets of one
	// runtime share it. Nil: no bound.
	Creates *Limiter
	// Logger receives the Set's logs; nil discards them.
	Logger *slog.Logger
}

// Outcome says how a Ref's sandbox was obtained.
type Outcome int

const (
	// Cold: a new sandbox was created.
	Cold Outcome = iota
	// Warm: a paused sandbox was unpaused.
	Warm
	// Hot: an unpaused sandbox within its pause grace was reused.
	Hot
)

func (o Outcome) String() string {
	switch o {
	case Cold:
		return "cold"
	case Warm:
		return "warm"
	case Hot:
		return "hot"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}
