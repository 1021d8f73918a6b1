package coalesce

import (
	"cmp"
	"slices"
	"testing"
)

// TestLatestPerKey: the queue keeps one value per key, the latest unless
// replace refuses it; a returned value does not overwrite a newer one; take
// empties what it returns; every put leaves a signal.
func TestLatestPerKey(t *testing.T) {
	q := New[string](func(old, new int) bool { return new >= old })
	q.Put("a", 1)
	q.Put("a", 3)
	q.Put("a", 2) // refused: older than what waits
	q.PutAll([]Entry[string, int]{{"b", 1}, {"c", 1}})
	select {
	case <-q.Notify():
	default:
		t.Fatal("no signal after puts")
	}
	got := q.Take(10)
	slices.SortFunc(got, func(x, y Entry[string, int]) int { return cmp.Compare(x.Key, y.Key) })
	if want := []Entry[string, int]{{"a", 3}, {"b", 1}, {"c", 1}}; !slices.Equal(got, want) {
		t.Fatalf("took %v, want %v", got, want)
	}
	if rest := q.Take(10); len(rest) != 0 {
		t.Fatalf("%v left after taking everything", rest)
	}

	q.Put("a", 5)
	q.Return([]Entry[string, int]{{"a", 4}, {"b", 2}})
	got = q.Take(1)
	got = append(got, q.Take(1)...)
	slices.SortFunc(got, func(x, y Entry[string, int]) int { return cmp.Compare(x.Key, y.Key) })
	if want := []Entry[string, int]{{"a", 5}, {"b", 2}}; !slices.Equal(got, want) {
		t.Fatalf("after a return: %v, want %v", got, want)
	}
}
