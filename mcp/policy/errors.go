package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem found in a policy file, at the line and column (both
// 1-based, columns in bytes) of the original HuJSON text, so that an editor or
// a reviewer can jump straight to it.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

// Error formats the problem as "FILE:LINE:COL: msg", the form compilers use
// and editors understand.
func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// ErrorList is every problem found in one policy file, sorted by position.
// Parse reports all of them at once so that an admin fixes a file in one pass
// rather than one error per run. Use errors.As to get at it (or at its first
// *Error).
type ErrorList []*Error

// Error joins the errors one per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap exposes the individual errors to errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		if c := cmp.Compare(a.Line, b.Line); c != 0 {
			return c
		}
		return cmp.Compare(a.Col, b.Col)
	})
}

// pos is a position in the original file.
type pos struct{ line, col int }

func (p pos) String() string { return fmt.Sprintf("%d:%d", p.line, p.col) }

// lineIndex converts byte offsets into positions in O(log n), so that
// parsing a large policy stays linear.
type lineIndex []int // offsets at which lines start

func newLineIndex(src []byte) lineIndex {
	idx := lineIndex{0}
	for i, c := range src {
		if c == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

// pos returns the 1-based line and column (in bytes) of offset off.
func (idx lineIndex) pos(off int) pos {
	i, found := slices.BinarySearch(idx, off)
	if !found {
		i--
	}
	return pos{i + 1, off - idx[i] + 1}
}
