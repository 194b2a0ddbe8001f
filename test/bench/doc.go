// Package bench holds end-to-end benchmarks that compare Wren with
// reference implementations on the same machine, in the same run. They
// live in _test.go files and need root, a real kube-apiserver (see
// test/kube) and the reference plugins; docs/benchmarks.md records their
// results and the commands that produce them.
package bench
