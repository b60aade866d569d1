// The Go peer of the macro benchmarks: etcd's own recipes (clientv3/concurrency
// and contrib/recipes) run in the same shapes as benches/macro/etcd.rs, so that
// `cargo xtask bench --against` can put each of ours beside Go's on the same
// server. It prints the same JSON lines, under the same bench names.
//
//	peer -endpoints 127.0.0.1:2379 -bench etcd.mutex.cycle
//
// Built by xtask in GOPATH mode against Debian's golang-etcd-server-dev.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

// The sizes match benches/macro/etcd.rs.
const (
	rawPuts     = 2000
	cycles      = 500
	handoffs    = 200
	queueItems  = 500
	bankTasks   = 10
	bankPerTask = 100
	accounts    = 5
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated etcd endpoints")
	bench := flag.String("bench", "", "the benchmark to run (a name from benches/macro/main.rs)")
	flag.Parse()
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 10 * time.Second,
	})
	check(err)
	defer client.Close()
	runs := map[string]func(*clientv3.Client){
		"etcd.raw.put":                          rawPut,
		"etcd.mutex.cycle":                      mutexCycle,
		"etcd.mutex.handoff":                    mutexHandoff,
		"etcd.queue.enqueue+etcd.queue.dequeue": queueSequential,
		"etcd.queue.mc8":                        queueMc8,
		"etcd.queue.enqueue_x8":                 queueEnqueue8,
		"etcd.stm.bank":                         stmBank,
	}
	run, ok := runs[*bench]
	if !ok {
		fmt.Fprintf(os.Stderr, "peer: no benchmark %q\n", *bench)
		os.Exit(2)
	}
	run(client)
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
		os.Exit(1)
	}
}

// line prints one result the way benches/macro/report.rs does.
func line(bench string, latencies []time.Duration, elapsed time.Duration) {
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	percentile := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		rank := int(float64(len(latencies)-1)*p + 0.5)
		return float64(latencies[rank].Microseconds())
	}
	fmt.Printf("{\"bench\":%q,\"peer\":\"go-recipes\",\"ops_per_s\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"n\":%d}\n",
		bench, float64(len(latencies))/elapsed.Seconds(), percentile(0.50), percentile(0.99), len(latencies))
}

// timed runs op count times in a row and prints its line.
func timed(bench string, count int, op func(i int) error) {
	latencies := make([]time.Duration, 0, count)
	started := time.Now()
	for i := 0; i < count; i++ {
		t := time.Now()
		check(op(i))
		latencies = append(latencies, time.Since(t))
	}
	line(bench, latencies, time.Since(started))
}

func rawPut(client *clientv3.Client) {
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		_, err := client.Put(ctx, "bench/go/raw/put", "warm-up")
		check(err)
	}
	timed("etcd.raw.put", rawPuts, func(i int) error {
		_, err := client.Put(ctx, "bench/go/raw/put", strconv.Itoa(i))
		return err
	})
}

func mutexCycle(client *clientv3.Client) {
	ctx := context.Background()
	session, err := concurrency.NewSession(client, concurrency.WithTTL(10))
	check(err)
	defer session.Close()
	mutex := concurrency.NewMutex(session, "bench/go/mutex-cycle")
	cycle := func(int) error {
		if err := mutex.Lock(ctx); err != nil {
			return err
		}
		return mutex.Unlock(ctx)
	}
	for i := 0; i < 20; i++ {
		check(cycle(i))
	}
	timed("etcd.mutex.cycle", cycles, cycle)
}

// mutexHandoff passes the lock between two sessions: from the holder's
// Unlock call to the waiter's Lock returning.
func mutexHandoff(client *clientv3.Client) {
	ctx := context.Background()
	const prefix = "bench/go/mutex-handoff"
	var mutexes [2]*concurrency.Mutex
	for i := range mutexes {
		session, err := concurrency.NewSession(client, concurrency.WithTTL(10))
		check(err)
		defer session.Close()
		mutexes[i] = concurrency.NewMutex(session, prefix)
	}
	check(mutexes[0].Lock(ctx))
	latencies := make([]time.Duration, 0, handoffs)
	started := time.Now()
	for i := 0; i < handoffs; i++ {
		holder, next := mutexes[i%2], mutexes[(i+1)%2]
		acquired := make(chan time.Time)
		go func() {
			check(next.Lock(ctx))
			acquired <- time.Now()
		}()
		// Let the waiter get in line before the release.
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := client.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			check(err)
			if got.Count >= 2 {
				break
			}
			if time.Now().After(deadline) {
				check(fmt.Errorf("the waiter never got in line"))
			}
			time.Sleep(200 * time.Microsecond)
		}
		releasedAt := time.Now()
		check(holder.Unlock(ctx))
		latencies = append(latencies, (<-acquired).Sub(releasedAt))
	}
	elapsed := time.Since(started)
	check(mutexes[handoffs%2].Unlock(ctx))
	line("etcd.mutex.handoff", latencies, elapsed)
}

func queueSequential(client *clientv3.Client) {
	queue := recipe.NewQueue(client, fmt.Sprintf("bench/go/queue-%d", os.Getpid()))
	timed("etcd.queue.enqueue", queueItems, func(i int) error { return queue.Enqueue(strconv.Itoa(i)) })
	timed("etcd.queue.dequeue", queueItems, func(int) error { _, err := queue.Dequeue(); return err })
}

// queueEnqueue8: eight goroutines enqueue at once, queueItems each, the
// way Go gets several enqueues in flight; items per second over all.
func queueEnqueue8(client *clientv3.Client) {
	queue := recipe.NewQueue(client, fmt.Sprintf("bench/go/queue-x8-%d", os.Getpid()))
	var wg sync.WaitGroup
	latencies := make([][]time.Duration, 8)
	started := time.Now()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < queueItems; i++ {
				t := time.Now()
				check(queue.Enqueue(strconv.Itoa(i)))
				latencies[g] = append(latencies[g], time.Since(t))
			}
		}(g)
	}
	wg.Wait()
	elapsed := time.Since(started)
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	line("etcd.queue.enqueue_x8", all, elapsed)
	_, err := client.Delete(context.Background(), fmt.Sprintf("bench/go/queue-x8-%d", os.Getpid()), clientv3.WithPrefix())
	check(err)
}

// queueMc8: one producer, eight goroutines blocked in Dequeue; items per
// second from the first enqueue to the last delivery.
func queueMc8(client *clientv3.Client) {
	queue := recipe.NewQueue(client, fmt.Sprintf("bench/go/queue-mc8-%d", os.Getpid()))
	var delivered int64
	for c := 0; c < 8; c++ {
		go func() {
			for {
				if _, err := queue.Dequeue(); err == nil {
					atomic.AddInt64(&delivered, 1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // all consumers idle first
	started := time.Now()
	for i := 0; i < queueItems; i++ {
		check(queue.Enqueue(strconv.Itoa(i)))
	}
	deadline := time.Now().Add(60 * time.Second)
	for atomic.LoadInt64(&delivered) < queueItems {
		if time.Now().After(deadline) {
			check(fmt.Errorf("items were not delivered"))
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("{\"bench\":\"etcd.queue.mc8\",\"peer\":\"go-recipes\",\"ops_per_s\":%.1f,\"consumers\":8,\"n\":%d}\n",
		float64(queueItems)/time.Since(started).Seconds(), queueItems)
	// The consumers are still blocked in Dequeue, which dereferences a nil
	// response once the client is closed: leave before they notice.
	os.Exit(0)
}

// stmBank: five accounts of 100; ten goroutines each make a hundred
// transfers of half a random balance, as the Rust bench does.
func stmBank(client *clientv3.Client) {
	ctx := context.Background()
	bank := fmt.Sprintf("bench/go/bank-%d", os.Getpid())
	for i := 0; i < accounts; i++ {
		_, err := client.Put(ctx, fmt.Sprintf("%s/%d", bank, i), "100")
		check(err)
	}
	var attempts int64
	transfer := func(stm concurrency.STM) error {
		atomic.AddInt64(&attempts, 1)
		a, b := rand.Intn(accounts), rand.Intn(accounts)
		if a == b {
			return nil
		}
		from, to := fmt.Sprintf("%s/%d", bank, a), fmt.Sprintf("%s/%d", bank, b)
		fromBalance, _ := strconv.Atoi(stm.Get(from))
		toBalance, _ := strconv.Atoi(stm.Get(to))
		stm.Put(from, strconv.Itoa(fromBalance-fromBalance/2))
		stm.Put(to, strconv.Itoa(toBalance+fromBalance/2))
		return nil
	}
	started := time.Now()
	var wg sync.WaitGroup
	for t := 0; t < bankTasks; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < bankPerTask; i++ {
				_, err := concurrency.NewSTM(client, transfer)
				check(err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	sum := 0
	for i := 0; i < accounts; i++ {
		got, err := client.Get(ctx, fmt.Sprintf("%s/%d", bank, i))
		check(err)
		balance, _ := strconv.Atoi(string(got.Kvs[0].Value))
		sum += balance
	}
	if sum != 100*accounts {
		check(fmt.Errorf("the bank's sum changed to %d", sum))
	}
	txns := bankTasks * bankPerTask
	fmt.Printf("{\"bench\":\"etcd.stm.bank\",\"peer\":\"go-recipes\",\"ops_per_s\":%.1f,\"attempts_per_txn\":%.2f,\"n\":%d}\n",
		float64(txns)/elapsed.Seconds(), float64(attempts)/float64(txns), txns)
}
