// Package clustertest proves the keystore on real replicated Redis: a
// Redis Cluster of 3 masters and 3 replicas, and a master, a replica and 3
// Sentinels, started on loopback by internal/redistest. It holds only tests
// (CRUD and listing across every slot, instant revocation through different
// nodes, failovers under load, and what an acknowledged revocation does
// when its master dies); they need redis-server and redis-cli:
//
//	go test -race -count=1 -v ./keystore/clustertest
//
// The failover tests log their figures on lines starting with FIGURES.
package clustertest
