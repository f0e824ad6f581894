//go:build race

package rooms

// raceEnabled is set in a race build, where benchmarks only run once to
// show that they still work (CI) and their numbers mean nothing.
const raceEnabled = true
