package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The change log of a kind of entries (the clients, the key pairs) lets an
// instance that read them once keep up by reading what changed, not what
// exists. Beside the entries' folder, under the folder's lock and in the
// same step as the change, a writer records:
//
//	<dir>.revision  {"epoch": "...", "revision": N}: tiny; read at every refresh
//	<dir>.log       the same, and the last changes: [{"revision": n, "name": "alias"}, ...]
//
// The entry is written first, then the log, then the revision: a reader that
// sees revision N finds the log holding N, and the entries as of N or later.
// A refresh when nothing changed reads the revision alone. A reader too far
// behind (the log keeps the last logLength changes), or one that sees another
// epoch (the storage was emptied, or the log lost), reads everything again,
// as it also does at a configured interval to repair what a lost write of the
// log would leave behind.

// Revision is a state of one kind of entries: the change log's epoch (a
// random name given when the log starts) and the number of changes
// recorded in it.
type Revision struct {
	Epoch  string `json:"epoch"`
	Number uint64 `json:"revision"`
}

// change is one recorded change: the entry name changed (written or
// deleted) at revision Number.
type change struct {
	Number  uint64 `json:"revision"`
	Name    string `json:"name"`
	Deleted bool   `json:"deleted,omitempty"`
}

// changeLog is the content of <dir>.log.
type changeLog struct {
	Revision
	Changes []change `json:"changes"`
}

// logLength is how many changes the log keeps: a reader behind by more
// reads everything again.
const logLength = 1000

func revisionKey(dir string) string { return dir + ".revision" }
func logKey(dir string) string      { return dir + ".log" }

// loadJSON loads key into v; found is false when key does not exist.
func (s *Store) loadJSON(ctx context.Context, key string, v any) (found bool, err error) {
	data, err := s.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("loading %s: %w", key, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("decoding %s: %w", key, err)
	}
	return true, nil
}

// openLog returns the change log of dir, for a writer holding dir's lock.
// A missing or unreadable log starts a new epoch (readers then read
// everything again); fresh tells it is new.
func (s *Store) openLog(ctx context.Context, dir string) (log *changeLog, fresh bool, err error) {
	log = new(changeLog)
	found, err := s.loadJSON(ctx, logKey(dir), log)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typ) {
		s.logger.Warn("change log corrupt; starting a new one (every instance reads the entries again)",
			zap.String("key", logKey(dir)), zap.Error(err))
		found, err = false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if !found || log.Epoch == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		log = &changeLog{Revision: Revision{Epoch: hex.EncodeToString(b[:])}}
		return log, true, nil
	}
	return log, false, nil
}

// next returns the revision the next recorded change will have.
func (l *changeLog) next() uint64 { return l.Number + 1 }

// record writes the changes of names (deletions if deleted) to the log of
// dir, and then its revision. The caller holds dir's lock and has written
// the entries.
func (s *Store) record(ctx context.Context, dir string, log *changeLog, deleted bool, names ...string) error {
	for _, name := range names {
		log.Number++
		log.Changes = append(log.Changes, change{Number: log.Number, Name: name, Deleted: deleted})
	}
	if n := len(log.Changes); n > logLength {
		log.Changes = append([]change(nil), log.Changes[n-logLength:]...)
	}
	if err := s.store(ctx, logKey(dir), log); err != nil {
		return err
	}
	return s.store(ctx, revisionKey(dir), log.Revision)
}

// changesSince returns the revision of dir now and the names changed since
// rev, or all=true when the log cannot tell them (another epoch, or rev too
// far behind): then everything must be read. It reads the revision alone
// when nothing changed.
func (s *Store) changesSince(ctx context.Context, dir string, rev Revision) (now Revision, names []string, deleted map[string]bool, all bool, err error) {
	found, err := s.loadRevision(ctx, dir, &now)
	if err != nil {
		return Revision{}, nil, nil, false, err
	}
	if !found {
		if rev != (Revision{}) {
			// It was there: some storages answer "not found" for a read
			// that failed (caddy-storage-redis while Redis is down or
			// loading). Wait for it; a full read (the caller's repair
			// interval) tells whether the log is really gone.
			return Revision{}, nil, nil, false, errRevisionMissing
		}
		// No log yet, or written by a version without one: only a full
		// read tells, and it is what the caller's repair interval does.
		return Revision{}, nil, nil, false, nil
	}
	if rev == (Revision{}) {
		// Read when there was no log: the log's first changes are what
		// changed since, if it still has them.
		rev.Epoch = now.Epoch
	}
	switch {
	case now == rev:
		return now, nil, nil, false, nil
	case now.Epoch != rev.Epoch || now.Number < rev.Number:
		return now, nil, nil, true, nil
	}
	var log changeLog
	if _, err := s.loadJSON(ctx, logKey(dir), &log); err != nil {
		return Revision{}, nil, nil, false, err
	}
	if log.Epoch != rev.Epoch || log.Number < now.Number {
		return now, nil, nil, true, nil // rewritten since the revision was read
	}
	if len(log.Changes) == 0 || log.Changes[0].Number > rev.Number+1 {
		return now, nil, nil, true, nil // too far behind
	}
	deleted = map[string]bool{}
	for _, c := range log.Changes {
		if c.Number <= rev.Number {
			continue
		}
		if CheckName(c.Name) != nil {
			s.logger.Warn("change log names an entry that cannot be; skipped", zap.String("key", logKey(dir)), zap.String("name", fmt.Sprintf("%.130q", c.Name)))
			continue
		}
		if _, seen := deleted[c.Name]; !seen {
			names = append(names, c.Name)
		}
		deleted[c.Name] = c.Deleted // the latest change of the name decides
	}
	sort.Strings(names)
	return log.Revision, names, deleted, false, nil
}

// loadRevision loads the revision of dir into rev; a revision that does
// not decode counts as none (a writer starts a new epoch over it).
func (s *Store) loadRevision(ctx context.Context, dir string, rev *Revision) (found bool, err error) {
	found, err = s.loadJSON(ctx, revisionKey(dir), rev)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if errors.As(err, &syntax) || errors.As(err, &typ) {
		s.logger.Warn("change log revision corrupt; read as none", zap.String("key", revisionKey(dir)), zap.Error(err))
		*rev = Revision{}
		return false, nil
	}
	return found, err
}

// Follower keeps up with one kind of stored entries for a reader that holds
// them in memory. Sync reads them all the first time, when asked to, and
// when the change log cannot tell what changed; otherwise only the entries
// changed since the last Sync.
type Follower struct {
	s   *Store
	dir string
	at  Revision
	ok  bool // read in full once

	fullEvery time.Duration // how often a Sync reads everything; 0: only when asked
	lastFull  time.Time
}

// FollowerState is where a Follower is: the revision it read up to and
// when it last read everything. A reader hands it to the follower of the
// next config of the same storage (ClientsFollowerFrom).
type FollowerState struct {
	At       Revision
	LastFull time.Time
}

// ClientsFollower follows the stored clients, KeyPairsFollower the key
// pairs; each Sync reads everything once fullEvery has passed since it
// last did (0: only when asked).
func (s *Store) ClientsFollower(fullEvery time.Duration) *Follower {
	return &Follower{s: s, dir: clientsDir, fullEvery: fullEvery}
}

func (s *Store) KeyPairsFollower(fullEvery time.Duration) *Follower {
	return &Follower{s: s, dir: keyPairsDir, fullEvery: fullEvery}
}

// ClientsFollowerFrom follows the stored clients from state, a former
// follower's: its first Sync reads what changed since.
func (s *Store) ClientsFollowerFrom(state FollowerState, fullEvery time.Duration) *Follower {
	return &Follower{s: s, dir: clientsDir, at: state.At, ok: true, fullEvery: fullEvery, lastFull: state.LastFull}
}

// State returns where f is. Like Sync, it is for f's one goroutine.
func (f *Follower) State() FollowerState { return FollowerState{At: f.at, LastFull: f.lastFull} }

// FullDue reports whether the next Sync reads everything.
func (f *Follower) FullDue() bool {
	return !f.ok || f.fullEvery > 0 && time.Since(f.lastFull) >= f.fullEvery
}

// loaders is how many entries a full read loads at once.
const loaders = 8

// Sync reads what changed since the last Sync (everything when all is
// true, on the first call, or when FullDue) and calls each, from this goroutine, with
// every entry read: its name (alias, key pair name) and its JSON, nil for
// an entry deleted. full tells that every entry was read, so that what
// each was not called with is gone. changed is false when nothing changed;
// then no entry was read. On an error the caller drops what each was
// given, and the next Sync reads from the same point again.
func (f *Follower) Sync(ctx context.Context, all bool, each func(name string, data []byte)) (full, changed bool, err error) {
	var names []string
	var deleted map[string]bool
	now := f.at
	all = all || f.FullDue()
	if f.ok && !all {
		now, names, deleted, all, err = f.s.changesSince(ctx, f.dir, f.at)
		if err != nil {
			return false, false, err
		}
		if !all && len(names) == 0 {
			f.at = now
			return false, false, nil
		}
	}
	found := true
	if !f.ok || all {
		// The revision first: changes made during the reading are read
		// again at the next Sync, which is harmless.
		now = Revision{}
		if found, err = f.s.loadRevision(ctx, f.dir, &now); err != nil {
			return false, false, err
		}
		keys, err := f.s.storage.List(ctx, f.dir, false)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, false, fmt.Errorf("listing %s: %w", f.dir, err)
		}
		names = names[:0]
		for _, key := range keys {
			if name, ok := strings.CutSuffix(path.Base(key), ".json"); ok {
				names = append(names, name)
			}
		}
		all = true
	}
	load := each
	if !all {
		// An entry the log says was written but that reads as missing (a
		// storage that answers "not found" for a failed read, or an
		// older version's deletion): not taken as deleted; its last good
		// version stays, and the next full read settles it.
		load = func(name string, data []byte) {
			if data == nil && !deleted[name] {
				f.s.logger.Warn("changed entry not found; its last version stays until the next full read", zap.String("dir", f.dir), zap.String("name", name))
				return
			}
			each(name, data)
		}
	}
	if err := f.s.loadEach(ctx, f.dir, names, load); err != nil {
		return false, false, err
	}
	// The revision again: a storage that answers "not found" for a read
	// that failed would have made entries look deleted. If the revision
	// is gone, has appeared, or went back since, what was read is not a
	// state of the storage: read again next time.
	var after Revision
	foundAfter, err := f.s.loadRevision(ctx, f.dir, &after)
	if err != nil {
		return false, false, err
	}
	if foundAfter != found || after.Epoch != now.Epoch || after.Number < now.Number {
		return false, false, errStorageChanged
	}
	f.at, f.ok = now, true
	if all {
		f.lastFull = time.Now()
	}
	return all, true, nil
}

var (
	errRevisionMissing = errors.New("the change log's revision is missing (the storage not answering, or emptied: a full read at the repair interval tells)")
	errStorageChanged  = errors.New("the change log's revision went missing, appeared or went back during the read (the storage not answering?); read again at the next refresh")
)

// At returns the revision the last Sync read up to.
func (f *Follower) At() Revision { return f.at }

// loadEach loads the entries names of dir, several at once, and calls each
// with them from this goroutine; a missing one has nil data.
func (s *Store) loadEach(ctx context.Context, dir string, names []string, each func(name string, data []byte)) error {
	type loaded struct {
		name string
		data []byte
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	results := make(chan loaded, loaders)
	var wg sync.WaitGroup
	for range min(loaders, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				data, err := s.storage.Load(ctx, dir+"/"+name+".json")
				if errors.Is(err, fs.ErrNotExist) {
					data, err = nil, nil
				} else if err != nil {
					err = fmt.Errorf("loading %s/%s.json: %w", dir, name, err)
				}
				select {
				case results <- loaded{name, data, err}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, name := range names {
			select {
			case work <- name:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	for r := range results {
		if r.err != nil {
			cancel()
			for range results {
			}
			return r.err
		}
		each(r.name, r.data)
	}
	return ctx.Err()
}
