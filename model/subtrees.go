package model

import "slices"

// NormalizeSubtrees returns a list of subtrees sorted, without
// duplicates and without any subtree that lies within another.
func NormalizeSubtrees(ps []Path) []Path {
	var out []Path
	for _, p := range ps {
		covered := slices.ContainsFunc(ps, func(q Path) bool { return q != p && p.Within(q) })
		if !covered && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// IntersectSubtrees returns the parts of subtrees a that lie within
// subtrees b, normalised. An empty list is empty: narrowing nothing gives
// nothing.
func IntersectSubtrees(a, b []Path) []Path {
	var out []Path
	for _, p := range a {
		for _, q := range b {
			switch {
			case p.Within(q):
				out = append(out, p)
			case q.Within(p):
				out = append(out, q)
			}
		}
	}
	return NormalizeSubtrees(out)
}
