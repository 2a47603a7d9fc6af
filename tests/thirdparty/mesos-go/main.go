// Command mesos-go-check drives mesos-sim with the third-party mesos-go
// library (Debian golang-github-mesos-mesos-go-dev, api/v1/lib: httpcli,
// httpsched, the protobuf codec and its RecordIO decoder) over protobuf
// (Content-Type and Accept: application/x-protobuf).
//
// Usage: mesos-go-check HOST:PORT
//
// Flow: SUBSCRIBE -> OFFERS -> ACCEPT one DOCKER task (BRIDGE, 31006->80) ->
// TASK_STARTING, TASK_RUNNING (each acknowledged with its uuid) -> DECLINE
// the other offers -> RECONCILE (explicit, implicit) -> KILL -> TASK_KILLED
// (acked) -> RECONCILE -> TEARDOWN -> the event stream ends cleanly (io.EOF
// after the final chunk) and /sim/state shows no connected framework.
//
// Build (GOPATH mode, offline):
//
//	GO111MODULE=off GOPATH=$TMP:/usr/share/gocode go build
//
// Exit 0 on success, 1 with "FAIL: ..." otherwise, 2 on the overall timeout.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gogo/protobuf/proto"
	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/encoding/codecs"
	"github.com/mesos/mesos-go/api/v1/lib/httpcli"
	"github.com/mesos/mesos-go/api/v1/lib/httpcli/httpsched"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"
)

const (
	taskID   = "mesos-go-docker-1"
	hostPort = 31006
	overall  = 60 * time.Second
)

var (
	master string
	step   = "start"
)

type failure string

func fail(format string, args ...interface{}) { panic(failure(fmt.Sprintf(format, args...))) }

func say(format string, args ...interface{}) {
	fmt.Printf("mesos-go-check: "+format+"\n", args...)
}

func setStep(s string) {
	step = s
	say("%s", s)
}

// streamItem is one decoded event or the error that ended the stream.
type streamItem struct {
	event *scheduler.Event
	err   error
}

type flow struct {
	ctx         context.Context
	caller      calls.Caller
	frameworkID string
	events      chan streamItem
	declined    int
	updates     []string
	ended       error
}

func (f *flow) call(c *scheduler.Call) {
	c = c.With(calls.Framework(f.frameworkID))
	resp, err := f.caller.Call(f.ctx, c)
	if resp != nil {
		resp.Close()
	}
	if err != nil {
		fail("%s call failed: %v", c.GetType(), err)
	}
}

func (f *flow) decline(offers []mesos.Offer) {
	for _, o := range offers {
		f.call(calls.Decline(o.ID).With(calls.RefuseSeconds(time.Second)))
		f.declined++
	}
}

// next returns the next event, declining offers and acknowledging agent
// updates on the way when asked to. nil on timeout.
func (f *flow) next(deadline time.Time, autoDecline bool) *scheduler.Event {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		select {
		case it, ok := <-f.events:
			if !ok || it.err != nil {
				if it.err != nil {
					f.ended = it.err
				}
				fail("event stream ended early (step %s): %v", step, it.err)
			}
			e := it.event
			switch e.GetType() {
			case scheduler.Event_OFFERS:
				if autoDecline {
					f.decline(e.GetOffers().GetOffers())
					continue
				}
			case scheduler.Event_ERROR:
				fail("ERROR event: %s", e.GetError().GetMessage())
			case scheduler.Event_HEARTBEAT:
				continue
			}
			return e
		case <-time.After(left):
			return nil
		}
	}
}

// waitUpdate acknowledges every update that has a uuid (as a v1 framework
// must) and returns the first one matching pred.
func (f *flow) waitUpdate(what string, pred func(*mesos.TaskStatus) bool) *mesos.TaskStatus {
	deadline := time.Now().Add(15 * time.Second)
	for {
		e := f.next(deadline, true)
		if e == nil {
			fail("no %s within 15s; updates so far: %v", what, f.updates)
		}
		if e.GetType() != scheduler.Event_UPDATE {
			continue
		}
		s := e.GetUpdate().GetStatus()
		reason := "-"
		if s.Reason != nil {
			reason = s.GetReason().String()
		}
		f.updates = append(f.updates, fmt.Sprintf("%s/%s/%s", s.GetTaskID().Value, s.GetState(), reason))
		if len(s.GetUUID()) > 0 {
			f.call(calls.Acknowledge(s.GetAgentID().GetValue(), s.GetTaskID().Value, s.GetUUID()))
		}
		if pred(&s) {
			return &s
		}
	}
}

func simState() map[string]interface{} {
	resp, err := http.Get("http://" + master + "/sim/state")
	if err != nil {
		fail("GET /sim/state: %v", err)
	}
	defer resp.Body.Close()
	var state map[string]interface{}
	if err := json.NewDecoder(resp.Body).Decode(&state); err != nil {
		fail("GET /sim/state: %v", err)
	}
	return state
}

func scalar(o *mesos.Offer, name string) float64 {
	var sum float64
	for _, r := range o.Resources {
		if r.Name == name && r.Scalar != nil {
			sum += r.Scalar.Value
		}
	}
	return sum
}

func hasPort(o *mesos.Offer, port uint64) bool {
	for _, r := range o.Resources {
		if r.Name == "ports" && r.Ranges != nil {
			for _, rg := range r.Ranges.Range {
				if rg.Begin <= port && port <= rg.End {
					return true
				}
			}
		}
	}
	return false
}

func dockerTask(o *mesos.Offer) mesos.TaskInfo {
	return mesos.TaskInfo{
		Name:    "mesos-go docker task",
		TaskID:  mesos.TaskID{Value: taskID},
		AgentID: o.AgentID,
		Resources: []mesos.Resource{
			{Name: "cpus", Type: mesos.SCALAR.Enum(), Scalar: &mesos.Value_Scalar{Value: 0.1}},
			{Name: "mem", Type: mesos.SCALAR.Enum(), Scalar: &mesos.Value_Scalar{Value: 32}},
			{Name: "ports", Type: mesos.RANGES.Enum(), Ranges: &mesos.Value_Ranges{
				Range: []mesos.Value_Range{{Begin: hostPort, End: hostPort}}}},
		},
		Command: &mesos.CommandInfo{Shell: proto.Bool(false)},
		Container: &mesos.ContainerInfo{
			Type: mesos.ContainerInfo_DOCKER.Enum(),
			Docker: &mesos.ContainerInfo_DockerInfo{
				Image:   "busybox",
				Network: mesos.ContainerInfo_DockerInfo_BRIDGE.Enum(),
				PortMappings: []mesos.ContainerInfo_DockerInfo_PortMapping{
					{HostPort: hostPort, ContainerPort: 80, Protocol: proto.String("tcp")},
				},
			},
		},
	}
}

func checkReconcile(s *mesos.TaskStatus, want mesos.TaskState) {
	if s.GetTaskID().Value != taskID || s.GetState() != want {
		fail("reconciliation said %s for %s, expected %s", s.GetState(), s.GetTaskID().Value, want)
	}
	if len(s.GetUUID()) != 0 {
		fail("reconciliation answer carries a uuid")
	}
	if s.GetSource() != mesos.SOURCE_MASTER {
		fail("reconciliation answer source %s, expected SOURCE_MASTER", s.GetSource())
	}
	say("reconcile -> %s", want)
}

func isReconcile(s *mesos.TaskStatus) bool { return s.GetReason() == mesos.REASON_RECONCILIATION }

func (f *flow) run() {
	setStep("subscribe")
	info := &mesos.FrameworkInfo{
		User:            "nobody",
		Name:            "mesos-go-check",
		FailoverTimeout: proto.Float64(3600),
		Hostname:        proto.String("localhost"),
	}
	// No client-wide timeout: the SUBSCRIBE response is a long-lived stream and
	// httpsched sends every call through this one client.
	subscribeClient := httpcli.New(
		httpcli.Endpoint("http://"+master+"/api/v1/scheduler"),
		httpcli.Codec(codecs.ByMediaType[codecs.MediaTypeProtobuf]),
		httpcli.Do(httpcli.With()),
	)
	f.caller = httpsched.NewCaller(subscribeClient)
	resp, err := f.caller.Call(f.ctx, calls.Subscribe(info))
	if err != nil {
		fail("SUBSCRIBE failed: %v", err)
	}
	f.events = make(chan streamItem, 1024)
	go func() {
		defer close(f.events)
		for {
			var e scheduler.Event
			if err := resp.Decode(&e); err != nil {
				f.events <- streamItem{err: err}
				return
			}
			f.events <- streamItem{event: &e}
		}
	}()
	first := <-f.events
	if first.err != nil {
		fail("reading SUBSCRIBED: %v", first.err)
	}
	if first.event.GetType() != scheduler.Event_SUBSCRIBED {
		fail("first event is %s, not SUBSCRIBED", first.event.GetType())
	}
	sub := first.event.GetSubscribed()
	f.frameworkID = sub.GetFrameworkID().GetValue()
	if f.frameworkID == "" {
		fail("SUBSCRIBED without framework_id")
	}
	say("subscribed as %s (heartbeat %.1fs, master %s %s)", f.frameworkID,
		sub.GetHeartbeatIntervalSeconds(), sub.GetMasterInfo().GetID(), sub.GetMasterInfo().GetVersion())
	connected := false
	for _, fw := range simState()["frameworks"].([]interface{}) {
		m := fw.(map[string]interface{})
		if m["id"] == f.frameworkID {
			connected = m["connected"].(bool)
			if m["failover_timeout"].(float64) != 3600 || m["user"] != "nobody" || m["name"] != "mesos-go-check" {
				fail("FrameworkInfo not kept as sent: %v", m)
			}
		}
	}
	if !connected {
		fail("/sim/state does not show %s connected", f.frameworkID)
	}

	setStep("offers")
	var offer *mesos.Offer
	deadline := time.Now().Add(15 * time.Second)
	for offer == nil {
		e := f.next(deadline, false)
		if e == nil {
			fail("no usable OFFERS within 15s")
		}
		if e.GetType() != scheduler.Event_OFFERS {
			continue
		}
		var rest []mesos.Offer
		for i := range e.GetOffers().Offers {
			o := e.GetOffers().Offers[i]
			if offer == nil && scalar(&o, "cpus") >= 0.1 && scalar(&o, "mem") >= 32 && hasPort(&o, hostPort) {
				offer = &o
			} else {
				rest = append(rest, o)
			}
		}
		f.decline(rest)
	}
	say("using offer %s on %s", offer.ID.Value, offer.Hostname)

	setStep("launch DOCKER task")
	f.call(calls.Accept(calls.OfferOperations{calls.OpLaunch(dockerTask(offer))}.WithOffers(offer.ID)))
	for _, want := range []mesos.TaskState{mesos.TASK_STARTING, mesos.TASK_RUNNING} {
		want := want
		s := f.waitUpdate(want.String(), func(s *mesos.TaskStatus) bool {
			if s.TaskID.Value == taskID {
				switch s.GetState() {
				case mesos.TASK_FAILED, mesos.TASK_ERROR, mesos.TASK_LOST, mesos.TASK_DROPPED:
					fail("task went %s (%s: %s) while waiting for %s", s.GetState(), s.GetReason(), s.GetMessage(), want)
				}
			}
			return s.TaskID.Value == taskID && s.GetState() == want
		})
		if len(s.GetUUID()) != 16 {
			fail("%s uuid is %d bytes, expected 16", want, len(s.GetUUID()))
		}
		if s.GetAgentID() == nil {
			fail("%s has no agent_id", want)
		}
		say("%s (uuid %s, acknowledged)", want, base64.StdEncoding.EncodeToString(s.GetUUID()))
	}

	setStep("reconcile while running")
	f.call(calls.Reconcile(calls.ReconcileTasks(map[string]string{taskID: offer.AgentID.Value})))
	checkReconcile(f.waitUpdate("explicit reconciliation answer", isReconcile), mesos.TASK_RUNNING)
	f.call(calls.Reconcile())
	checkReconcile(f.waitUpdate("implicit reconciliation answer", isReconcile), mesos.TASK_RUNNING)

	setStep("kill")
	f.call(calls.Kill(taskID, offer.AgentID.Value))
	s := f.waitUpdate("TASK_KILLED", func(s *mesos.TaskStatus) bool {
		return s.TaskID.Value == taskID && s.GetState() == mesos.TASK_KILLED
	})
	if len(s.GetUUID()) != 16 {
		fail("TASK_KILLED uuid is %d bytes", len(s.GetUUID()))
	}
	// Wait until the master has the ack and forgets the task.
	deadline = time.Now().Add(5 * time.Second)
	for {
		gone := true
		for _, t := range simState()["tasks"].([]interface{}) {
			if t.(map[string]interface{})["id"] == taskID {
				gone = false
			}
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			fail("the acknowledged TASK_KILLED task is still in /sim/state")
		}
		time.Sleep(50 * time.Millisecond)
	}

	setStep("reconcile after kill")
	f.call(calls.Reconcile(calls.ReconcileTasks(map[string]string{taskID: offer.AgentID.Value})))
	checkReconcile(f.waitUpdate("explicit reconciliation answer", isReconcile), mesos.TASK_LOST)

	setStep("teardown")
	removedBefore := simState()["removed_frameworks"].(float64)
	f.call(&scheduler.Call{Type: scheduler.Call_TEARDOWN})
	deadline = time.Now().Add(10 * time.Second)
	for f.ended == nil {
		select {
		case it, ok := <-f.events:
			if !ok {
				fail("event channel closed without an error")
			}
			if it.err != nil {
				f.ended = it.err
			} else if it.event.GetType() == scheduler.Event_UPDATE || it.event.GetType() == scheduler.Event_ERROR {
				fail("unexpected %s after TEARDOWN", it.event.GetType())
			}
		case <-time.After(time.Until(deadline)):
			fail("the event stream did not end within 10s of TEARDOWN")
		}
	}
	if f.ended != io.EOF {
		fail("the event stream ended with %v, not a clean EOF (final chunk)", f.ended)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		state := simState()
		anyConnected := false
		for _, fw := range state["frameworks"].([]interface{}) {
			if fw.(map[string]interface{})["connected"].(bool) {
				anyConnected = true
			}
		}
		if !anyConnected && state["removed_frameworks"].(float64) > removedBefore {
			break
		}
		if time.Now().After(deadline) {
			fail("/sim/state still shows a connected framework after TEARDOWN")
		}
		time.Sleep(100 * time.Millisecond)
	}
	say("stream ended cleanly (EOF); no framework connected; %d offers declined; updates %v", f.declined, f.updates)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mesos-go-check HOST:PORT")
		os.Exit(64)
	}
	master = os.Args[1]
	go func() {
		time.Sleep(overall)
		fmt.Printf("FAIL: mesos-go check timed out after %s (last step: %s)\n", overall, step)
		os.Exit(2)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &flow{ctx: ctx}
	defer func() {
		if r := recover(); r != nil {
			if msg, ok := r.(failure); ok {
				fmt.Printf("FAIL: %s\n", msg)
				os.Exit(1)
			}
			panic(r)
		}
	}()
	f.run()
	fmt.Println("PASS: mesos-go 0.0.6 (protobuf): subscribe, offers, DOCKER launch, STARTING/RUNNING with acks, decline, reconcile, kill, teardown")
}
