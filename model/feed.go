package model

import "context"

// The event feed: the notable events (level warning or alert) recorded on
// the contexts of a subtree, newest first, a page at a time. Stores keep an
// index of notable events, so a feed reads only those, not every context's
// history. Info events are not in it.

// Bounds of a feed page.
const (
	DefaultFeedLimit = 50
	MaxFeedLimit     = 1000
	// MaxFeedScan bounds the index entries one feed call reads: a page of
	// a small subtree among many notable events elsewhere ends early,
	// with a cursor to go on from.
	MaxFeedScan = 10000
)

// Notable reports whether events of level l are in the feed.
func Notable(l Level) bool { return l == LevelWarning || l == LevelAlert }

// FeedQuery selects the feed of a subtree.
type FeedQuery struct {
	// Prefix is the subtree: events of the context at Prefix and those
	// below it. "" or "/" is the whole tree.
	Prefix Path
	// Level is the lowest level wanted: LevelWarning (or "") for warnings
	// and alerts, LevelAlert for alerts only.
	Level Level
	// Tenants, when non-nil, are the tenants whose events may be returned
	// (an event's tenant is its context's when it was recorded; "" names
	// shared contexts); nil allows every tenant, an empty list none.
	Tenants []string
	// Before is the cursor: only events with Seq < Before (0: from the
	// newest).
	Before uint64
	// Limit is the page size, 1..MaxFeedLimit (0: DefaultFeedLimit).
	Limit int
}

// FeedPage is one page of the feed, newest first. Next, when not 0, is
// where the next page starts (pass it as Before): it is set when the page
// is full or the scan reached MaxFeedScan index entries, so a page may be
// short, even empty, and still have a next one. Next never names an
// event of a tenant outside Tenants.
type FeedPage struct {
	Events []Event
	Next   uint64
}

// EventFeed is the feed both stores offer beside Store.
type EventFeed interface {
	Feed(ctx context.Context, q FeedQuery) (FeedPage, error)
}
