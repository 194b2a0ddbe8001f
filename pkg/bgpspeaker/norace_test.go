//go:build !race

package bgpspeaker

const raceEnabled = false
