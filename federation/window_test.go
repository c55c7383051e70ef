package federation

import (
	"testing"
	"time"
)

func TestWindows(t *testing.T) {
	day := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	at := func(h, m int) time.Time { return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	night := Window{From: 22 * time.Hour, To: 6 * time.Hour}
	noon := Window{From: 12 * time.Hour, To: 13 * time.Hour}
	for _, c := range []struct {
		ws   []Window
		t    time.Time
		want time.Duration
	}{
		{nil, at(10, 0), 0},
		{[]Window{night}, at(23, 0), 0},
		{[]Window{night}, at(3, 0), 0},
		{[]Window{night}, at(6, 0), 16 * time.Hour},
		{[]Window{night}, at(21, 30), 30 * time.Minute},
		{[]Window{noon}, at(12, 59), 0},
		{[]Window{noon}, at(13, 0), 23 * time.Hour},
		{[]Window{night, noon}, at(10, 0), 2 * time.Hour},
	} {
		if got := untilOpen(c.ws, c.t); got != c.want {
			t.Errorf("untilOpen(%v, %s) = %v, want %v", c.ws, c.t.Format("15:04"), got, c.want)
		}
	}
}
