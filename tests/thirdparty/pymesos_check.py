#!/usr/bin/env python3
"""Drive mesos-sim with the third-party pymesos client (Mesos JSON over the
v1 scheduler HTTP API) through one whole task life cycle.

Usage: pymesos_check.py HOST:PORT

Flow: SUBSCRIBE (failover_timeout, user, name) -> OFFERS -> ACCEPT one DOCKER
task (BRIDGE, 31005->80) -> TASK_STARTING, TASK_RUNNING (pymesos acks each
update that has a uuid) -> DECLINE every other offer -> RECONCILE while
running (explicit and implicit) -> KILL -> TASK_KILLED -> RECONCILE again
(explicit and implicit) -> TEARDOWN -> the stream ends with the final chunk
and /sim/state shows no connected framework.

Everything on the wire is pymesos's own code (MesosSchedulerDriver): the
SUBSCRIBE request, RecordIO/chunk parsing, the calls and the acks. The only
hook is a wrapper around pymesos.process.Connection.read that records how
the event stream ended and stops pymesos from resubscribing after TEARDOWN.

Exit 0 on success; 1 with a "FAIL: ..." message otherwise; 2 on the overall
timeout.
"""

import http.client
import json
import logging
import os
import queue
import sys
import threading
import time
import urllib.request

try:
    import pymesos
    from pymesos import MesosSchedulerDriver, Scheduler
    from pymesos import process as pymesos_process
except ImportError as e:  # pragma: no cover - reported by the script
    print("FAIL: cannot import pymesos: %s" % e)
    sys.exit(1)

OVERALL_TIMEOUT = float(os.environ.get("PYMESOS_CHECK_TIMEOUT", "60"))
TASK_ID = "pymesos-docker-1"
HOST_PORT = 31005

logging.basicConfig(
    level=getattr(logging, os.environ.get("PYMESOS_CHECK_LOG", "WARNING")),
    format="pymesos_check %(levelname)s %(name)s: %(message)s",
)
log = logging.getLogger("pymesos_check")


class Failure(Exception):
    pass


def watchdog():
    time.sleep(OVERALL_TIMEOUT)
    print("FAIL: pymesos check timed out after %.0fs (last step: %s)"
          % (OVERALL_TIMEOUT, STEP[0]), flush=True)
    os._exit(2)


STEP = ["start"]


def step(name):
    STEP[0] = name
    print("pymesos_check: %s" % name, flush=True)


class Recorder(Scheduler):
    """Puts every callback on a queue for the main thread."""

    def __init__(self):
        self.events = queue.Queue()

    def registered(self, driver, framework_id, master_info):
        self.events.put(("registered", framework_id, master_info))

    def reregistered(self, driver, master_info):
        self.events.put(("reregistered", master_info))

    def resourceOffers(self, driver, offers):
        self.events.put(("offers", offers))

    def statusUpdate(self, driver, status):
        # pymesos (implicit_acknowledgements=True) sends ACKNOWLEDGE right
        # after this returns, for every status that carries a uuid.
        self.events.put(("update", status))

    def offerRescinded(self, driver, offer_id):
        self.events.put(("rescind", offer_id))

    def error(self, driver, message):
        self.events.put(("error", message))

    def slaveLost(self, driver, agent_id):
        self.events.put(("agent_lost", agent_id))


STREAM = {"ends": [], "teardown_sent": False}


def install_stream_hook(driver):
    original = pymesos_process.Connection.read

    def read(conn):
        ok = original(conn)
        if not ok:
            parser = conn._parser
            STREAM["ends"].append({
                "message_complete": bool(parser.is_message_complete()),
                "chunked": bool(parser.is_chunked()),
                "after_teardown": STREAM["teardown_sent"],
            })
            if STREAM["teardown_sent"]:
                # Without this pymesos would SUBSCRIBE again at once (as a new
                # framework, since TEARDOWN forgot the id).
                driver._master = None
        return ok

    pymesos_process.Connection.read = read


def sim_state(master):
    with urllib.request.urlopen("http://%s/sim/state" % master, timeout=5) as r:
        return json.loads(r.read().decode("utf-8"))


def scalar(offer, name):
    return sum(r.get("scalar", {}).get("value", 0.0)
               for r in offer.get("resources", []) if r.get("name") == name)


def has_port(offer, port):
    for r in offer.get("resources", []):
        if r.get("name") == "ports":
            for rng in r.get("ranges", {}).get("range", []):
                if int(rng["begin"]) <= port <= int(rng["end"]):
                    return True
    return False


def docker_task(offer):
    return {
        "task_id": {"value": TASK_ID},
        "agent_id": offer["agent_id"],
        "name": "pymesos docker task",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            {"name": "ports", "type": "RANGES",
             "ranges": {"range": [{"begin": HOST_PORT, "end": HOST_PORT}]}},
        ],
        "command": {"shell": False},
        "container": {
            "type": "DOCKER",
            "docker": {
                "image": "busybox",
                "network": "BRIDGE",
                "port_mappings": [
                    {"host_port": HOST_PORT, "container_port": 80,
                     "protocol": "tcp"},
                ],
            },
        },
    }


class Flow:
    def __init__(self, driver, sched, master):
        self.driver = driver
        self.sched = sched
        self.master = master
        self.declined = 0
        self.updates = []

    def next_event(self, deadline):
        """The next callback, declining any offer that arrives meanwhile."""
        while True:
            left = deadline - time.time()
            if left <= 0:
                return None
            try:
                ev = self.sched.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if ev[0] == "offers" and self.declining:
                self.decline(ev[1])
                continue
            if ev[0] == "error":
                raise Failure("ERROR event from the master: %r" % (ev[1],))
            return ev

    declining = True

    def decline(self, offers):
        for offer in offers:
            self.driver.declineOffer(offer["id"], filters={"refuse_seconds": 1.0})
            self.declined += 1

    def wait_update(self, what, predicate, timeout=15):
        deadline = time.time() + timeout
        while True:
            ev = self.next_event(deadline)
            if ev is None:
                raise Failure("no %s within %ss; updates so far: %s"
                              % (what, timeout, json.dumps(self.updates)))
            if ev[0] == "update":
                status = ev[1]
                self.updates.append(status)
                if predicate(status):
                    return status
                if status.get("task_id", {}).get("value") == TASK_ID and \
                        status.get("state") in ("TASK_FAILED", "TASK_ERROR",
                                                "TASK_LOST", "TASK_DROPPED"):
                    if "reconcil" not in what:
                        raise Failure("task went %s while waiting for %s: %s"
                                      % (status["state"], what, json.dumps(status)))

    def run(self):
        sched, driver = self.sched, self.driver

        step("subscribe")
        deadline = time.time() + 15
        ev = None
        while ev is None or ev[0] != "registered":
            ev = sched.events.get(timeout=max(0.1, deadline - time.time()))
        framework_id = ev[1]["value"]
        if not framework_id:
            raise Failure("SUBSCRIBED without framework_id")
        if not driver.stream_id:
            raise Failure("no Mesos-Stream-Id header on the SUBSCRIBE response")
        print("pymesos_check: subscribed as %s (stream %s, master version %s)"
              % (framework_id, driver.stream_id, driver.version), flush=True)
        state = sim_state(self.master)
        fws = [f for f in state["frameworks"] if f["id"] == framework_id]
        if not fws or not fws[0]["connected"]:
            raise Failure("/sim/state does not show %s connected: %s"
                          % (framework_id, json.dumps(state["frameworks"])))
        if fws[0]["failover_timeout"] != 3600 or fws[0]["user"] != "nobody" \
                or fws[0]["name"] != "pymesos-check":
            raise Failure("FrameworkInfo not kept as sent: %s" % json.dumps(fws[0]))

        step("offers")
        offer = None
        deadline = time.time() + 15
        while offer is None:
            self.declining = False
            ev = self.next_event(deadline)
            if ev is None:
                raise Failure("no usable OFFERS within 15s")
            if ev[0] != "offers":
                continue
            rest = []
            for o in ev[1]:
                if offer is None and scalar(o, "cpus") >= 0.1 and \
                        scalar(o, "mem") >= 32 and has_port(o, HOST_PORT):
                    offer = o
                else:
                    rest.append(o)
            for key in ("id", "framework_id", "agent_id", "hostname", "resources"):
                if offer is not None and key not in offer:
                    raise Failure("offer lacks %r: %s" % (key, json.dumps(offer)))
            self.declining = True
            self.decline(rest)
        print("pymesos_check: using offer %s on %s" % (offer["id"]["value"],
                                                       offer["hostname"]),
              flush=True)

        step("launch DOCKER task")
        driver.launchTasks(offer["id"], [docker_task(offer)])
        for state_name in ("TASK_STARTING", "TASK_RUNNING"):
            status = self.wait_update(
                state_name,
                lambda s, n=state_name: s.get("task_id", {}).get("value") == TASK_ID
                and s.get("state") == n)
            if "uuid" not in status:
                raise Failure("%s has no uuid (agent updates must): %s"
                              % (state_name, json.dumps(status)))
            if "agent_id" not in status:
                raise Failure("%s has no agent_id: %s" % (state_name, json.dumps(status)))
            print("pymesos_check: %s (uuid %s, acked by pymesos)"
                  % (state_name, status["uuid"]), flush=True)
        wait_acked(self.master, TASK_ID)

        step("reconcile while running")
        driver.reconcileTasks([{"task_id": {"value": TASK_ID}}])
        status = self.wait_update(
            "explicit reconciliation answer",
            lambda s: s.get("reason") == "REASON_RECONCILIATION")
        check_reconcile(status, "TASK_RUNNING")
        driver.reconcileTasks([])
        status = self.wait_update(
            "implicit reconciliation answer",
            lambda s: s.get("reason") == "REASON_RECONCILIATION")
        check_reconcile(status, "TASK_RUNNING")

        step("kill")
        driver.killTask({"value": TASK_ID})
        status = self.wait_update(
            "TASK_KILLED",
            lambda s: s.get("task_id", {}).get("value") == TASK_ID
            and s.get("state") == "TASK_KILLED")
        if "uuid" not in status:
            raise Failure("TASK_KILLED has no uuid: %s" % json.dumps(status))
        wait_acked(self.master, TASK_ID, gone=True)

        step("reconcile after kill")
        # The terminal update is acknowledged, so the master has forgotten the
        # task: explicit reconciliation answers TASK_LOST (framework is not
        # PARTITION_AWARE) and implicit reconciliation answers nothing.
        driver.reconcileTasks([{"task_id": {"value": TASK_ID}}])
        status = self.wait_update(
            "explicit reconciliation answer",
            lambda s: s.get("reason") == "REASON_RECONCILIATION")
        check_reconcile(status, "TASK_LOST")
        driver.reconcileTasks([])
        deadline = time.time() + 1.5
        while True:
            ev = self.next_event(deadline)
            if ev is None:
                break
            if ev[0] == "update":
                raise Failure("implicit reconciliation answered for a forgotten "
                              "task: %s" % json.dumps(ev[1]))

        step("teardown")
        STREAM["teardown_sent"] = True
        removed_before = sim_state(self.master)["removed_frameworks"]
        try:
            driver._teardown()  # pymesos's own TEARDOWN call (what stop() sends)
        except (http.client.HTTPException, OSError) as e:
            # Known pymesos race, not a master bug: the master ends the event
            # stream and answers 202 independently (real Mesos too); when the
            # final chunk arrives first, pymesos's IO thread runs on_close(),
            # which closes the shared call connection without taking the lock
            # while this thread waits for the 202 (ResponseNotReady).
            print("pymesos_check: TEARDOWN reply lost to pymesos's on_close "
                  "race (%r); checking the master's state instead" % (e,),
                  flush=True)
        deadline = time.time() + 10
        while not STREAM["ends"] and time.time() < deadline:
            time.sleep(0.05)
        if not STREAM["ends"]:
            raise Failure("the event stream did not end within 10s of TEARDOWN")
        end = STREAM["ends"][-1]
        if not end["message_complete"]:
            raise Failure("the event stream ended without the final chunk "
                          "(0\\r\\n\\r\\n): %s" % end)
        deadline = time.time() + 5
        while True:
            state = sim_state(self.master)
            connected = [f for f in state["frameworks"] if f["connected"]]
            if not connected and state["removed_frameworks"] > removed_before:
                break
            if time.time() > deadline:
                raise Failure("/sim/state still shows connected frameworks "
                              "after TEARDOWN: %s" % json.dumps(connected))
            time.sleep(0.1)
        print("pymesos_check: stream ended with the final chunk; no framework "
              "connected; %d offers declined; %d updates seen"
              % (self.declined, len(self.updates)), flush=True)


def check_reconcile(status, expected):
    if status.get("task_id", {}).get("value") != TASK_ID:
        raise Failure("reconciliation answer for the wrong task: %s" % json.dumps(status))
    if status.get("state") != expected:
        raise Failure("reconciliation said %s, expected %s: %s"
                      % (status.get("state"), expected, json.dumps(status)))
    if "uuid" in status:
        raise Failure("reconciliation answer carries a uuid: %s" % json.dumps(status))
    if status.get("source") != "SOURCE_MASTER":
        raise Failure("reconciliation answer source is not SOURCE_MASTER: %s"
                      % json.dumps(status))
    print("pymesos_check: reconcile -> %s" % expected, flush=True)


def wait_acked(master, task_id, gone=False, timeout=5):
    deadline = time.time() + timeout
    while True:
        tasks = {t["id"]: t for t in sim_state(master)["tasks"]}
        task = tasks.get(task_id)
        if gone and task is None:
            return
        if not gone and task is not None and task["unacknowledged"] == 0:
            return
        if time.time() > deadline:
            raise Failure("pymesos's acknowledgements did not reach the sim: %s"
                          % json.dumps(task))
        time.sleep(0.05)


def main():
    if len(sys.argv) != 2:
        print("usage: pymesos_check.py HOST:PORT", file=sys.stderr)
        return 64
    master = sys.argv[1]
    threading.Thread(target=watchdog, daemon=True).start()
    print("pymesos_check: pymesos from %s" % os.path.dirname(pymesos.__file__),
          flush=True)

    sched = Recorder()
    framework = {
        "user": "nobody",
        "name": "pymesos-check",
        "failover_timeout": 3600.0,
        "hostname": "localhost",
    }
    driver = MesosSchedulerDriver(sched, framework, master,
                                  implicit_acknowledgements=True)
    install_stream_hook(driver)
    driver.start()
    try:
        Flow(driver, sched, master).run()
    except Failure as e:
        print("FAIL: %s" % e, flush=True)
        return 1
    except KeyboardInterrupt:
        # pymesos interrupts the main thread when its IO thread dies.
        print("FAIL: the pymesos IO thread aborted (see its log above)", flush=True)
        return 1
    except queue.Empty:
        print("FAIL: SUBSCRIBED never arrived", flush=True)
        return 1
    finally:
        driver.stop()
        driver.join()
    print("PASS: pymesos %s: subscribe, offers, DOCKER launch, STARTING/RUNNING "
          "with acks, decline, reconcile, kill, teardown"
          % getattr(pymesos, "__VERSION__", ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
