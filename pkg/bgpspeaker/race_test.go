//go:build race

package bgpspeaker

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true
