package store

import "github.com/cespare/xxhash/v2"

// The signature of a context's terms.
//
// Every posting key of a context carries, as its value, a Bloom filter of
// all the context's terms (termSignature). A search that walks its rarest
// list therefore checks a candidate against its other filters from the
// posting it is on, without reading another key: only the candidates
// whose signature holds every filter are read and matched (a false
// positive costs one read, and the matcher drops it). Changing a
// context's terms rewrites all its postings' values (reindex); a change
// that keeps its terms writes nothing.
const (
	// sigBitsPerTerm is the filter's size per term: with sigHashes bits
	// per term, about 3 % of the terms a context lacks pass.
	sigBitsPerTerm = 8
	sigHashes      = 3
	sigMinBits     = 64
)

// termSignature returns the Bloom filter of terms: a multiple of 64 bits,
// at least sigMinBits, sigBitsPerTerm per term.
func termSignature(terms [][]byte) []byte {
	bits := (len(terms)*sigBitsPerTerm + 63) / 64 * 64
	bits = max(bits, sigMinBits)
	sig := make([]byte, bits/8)
	for _, t := range terms {
		h1, h2 := sigHash(t)
		for i := range uint32(sigHashes) {
			b := (h1 + i*h2) % uint32(bits)
			sig[b/8] |= 1 << (b % 8)
		}
	}
	return sig
}

// sigHolds says whether the signature sig may hold the term t: false
// means it does not. An empty sig (not a signature) may hold anything.
func sigHolds(sig, t []byte) bool {
	if len(sig) == 0 {
		return true
	}
	bits := uint32(len(sig)) * 8
	h1, h2 := sigHash(t)
	for i := range uint32(sigHashes) {
		b := (h1 + i*h2) % bits
		if sig[b/8]&(1<<(b%8)) == 0 {
			return false
		}
	}
	return true
}

// sigHoldsAny says whether sig may hold one of terms.
func sigHoldsAny(sig []byte, terms [][]byte) bool {
	for _, t := range terms {
		if sigHolds(sig, t) {
			return true
		}
	}
	return false
}

// sigHash splits the term's 64-bit hash into the two halves of the
// double hashing that picks its bits (the second odd, so the bits differ).
func sigHash(t []byte) (uint32, uint32) {
	h := xxhash.Sum64(t)
	return uint32(h), uint32(h>>32) | 1
}
