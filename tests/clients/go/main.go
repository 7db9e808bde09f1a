// A confluent-kafka-go client for the plugin tests, built the default way
// (`go build`: librdkafka linked statically into this executable, no
// -rdynamic), so the plugin must find librdkafka's functions in the main
// program. The e2ee.* settings come from KAFKA_E2EE_CONFIG (a file the
// plugin reads when it loads): a Go map has no order, so e2ee.* properties
// in the ConfigMap could reach librdkafka before plugin.library.paths.
//
//	e2ee-go produce  -b BOOTSTRAP -t TOPIC [-hold FILE] [-X k=v]...  < hex values, one a line
//	    prints ACKED once every record is acknowledged; with -hold it then
//	    stays up (serving its keys to consumers) until FILE exists
//	e2ee-go consume  -b BOOTSTRAP -t TOPIC -n COUNT [-X k=v]...  > hex values
//	e2ee-go version
package main

import (
	"bufio"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

type props []string

func (p *props) String() string     { return strings.Join(*p, ",") }
func (p *props) Set(v string) error { *p = append(*p, v); return nil }

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "e2ee-go: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: e2ee-go produce|consume|version ...")
	}
	mode := os.Args[1]
	if mode == "version" {
		_, s := kafka.LibraryVersion()
		fmt.Println(s)
		return
	}
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	bootstrap := fs.String("b", "", "bootstrap servers")
	topic := fs.String("t", "", "topic")
	count := fs.Int("n", 0, "records to consume")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	hold := fs.String("hold", "", "after producing, stay up until this file exists")
	var extra props
	fs.Var(&extra, "X", "librdkafka property k=v (repeatable)")
	_ = fs.Parse(os.Args[2:])
	conf := kafka.ConfigMap{"bootstrap.servers": *bootstrap}
	for _, kv := range extra {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fail("-X %q: want k=v", kv)
		}
		conf[k] = v
	}
	switch mode {
	case "produce":
		produce(conf, *topic, *timeout, *hold)
	case "consume":
		consume(conf, *topic, *count, *timeout)
	default:
		fail("unknown mode %q", mode)
	}
}

func produce(conf kafka.ConfigMap, topic string, timeout time.Duration, hold string) {
	p, err := kafka.NewProducer(&conf)
	if err != nil {
		fail("producer: %v", err)
	}
	defer p.Close()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 4<<20), 4<<20)
	sent := 0
	for in.Scan() {
		v, err := hex.DecodeString(strings.TrimSpace(in.Text()))
		if err != nil {
			fail("stdin: %v", err)
		}
		err = p.Produce(&kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: 0},
			Key:            []byte(fmt.Sprintf("k%d", sent)),
			Value:          v,
		}, nil)
		if err != nil {
			fail("produce: %v", err)
		}
		sent++
	}
	deadline := time.Now().Add(timeout)
	acked := 0
	for acked < sent {
		if time.Now().After(deadline) {
			fail("%d of %d records acknowledged in %v", acked, sent, timeout)
		}
		select {
		case e := <-p.Events():
			switch ev := e.(type) {
			case *kafka.Message:
				if ev.TopicPartition.Error != nil {
					fail("delivery: %v", ev.TopicPartition.Error)
				}
				acked++
			case kafka.Error:
				fmt.Fprintf(os.Stderr, "e2ee-go: %v\n", ev)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	fmt.Printf("ACKED %d\n", acked)
	for stop := time.Now().Add(5 * time.Minute); hold != "" && time.Now().Before(stop); {
		if _, err := os.Stat(hold); err == nil {
			break
		}
		select {
		case <-p.Events():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func consume(conf kafka.ConfigMap, topic string, count int, timeout time.Duration) {
	conf["group.id"] = "e2ee-go"
	conf["enable.auto.commit"] = false
	conf["enable.partition.eof"] = false
	c, err := kafka.NewConsumer(&conf)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer c.Close()
	err = c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: kafka.OffsetBeginning}})
	if err != nil {
		fail("assign: %v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	deadline := time.Now().Add(timeout)
	for got := 0; got < count; {
		if time.Now().After(deadline) {
			out.Flush()
			fail("%d of %d records in %v", got, count, timeout)
		}
		ev := c.Poll(200)
		switch e := ev.(type) {
		case *kafka.Message:
			if e.TopicPartition.Error != nil {
				// A record the plugin could not open: fail closed, loudly.
				out.Flush()
				fail("record at offset %v: %v", e.TopicPartition.Offset, e.TopicPartition.Error)
			}
			fmt.Fprintln(out, hex.EncodeToString(e.Value))
			got++
		case kafka.Error:
			fmt.Fprintf(os.Stderr, "e2ee-go: %v\n", e)
		}
	}
}
