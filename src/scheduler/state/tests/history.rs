//! The decision trail of one task (`show`) and the notices of the event
//! stream (`events`), through the same scripts as the other state tests.

use super::check;

#[test]
fn a_task_history_tells_its_rounds_launch_statuses_and_kill() {
    check(
        "
        subscribed
        offer slave1
        events
        submit sim mem=100 type=lab
        offer slave1
        tick 5
        offer slave1
        tick 5
        offer slave1
        offer slave2
        update sim TASK_RUNNING
        update sim TASK_RUNNING reconcile
        events
        kill sim
        update sim TASK_KILLED message=bye
        show sim
        events
        show nope
        events
        ",
        "
        > subscribed
        RECONCILE all
        > offer slave1
        DECLINE o1 refuse=120
        SUPPRESS
        > events
        ~ t=1000 subscribed fw
        ~ t=1000 node_joined slave1 slave1
        > submit sim mem=100 type=lab
        REVIVE
        = submitted sim
        > offer slave1
        DECLINE o2 refuse=5
        > tick 5
        > offer slave1
        DECLINE o3 refuse=5
        > tick 5
        > offer slave1
        DECLINE o4 refuse=5
        > offer slave2
        LAUNCH on slave2: sim-1000000000000
        SUPPRESS
        > update sim TASK_RUNNING
        > update sim TASK_RUNNING reconcile
        > events
        ~ t=1000 task_submitted sim-1000000000000 id=sim
        ~ t=1010 node_joined slave2 slave2
        ~ t=1010 task_placed sim-1000000000000 on slave2: 1 offer, 1 examined: placed on slave2, most free mem among nodetype=lab
        ~ t=1010 task_launched sim-1000000000000 on slave2
        ~ t=1010 task_status sim-1000000000000 TASK_RUNNING reason=- message=- node=slave2
        > kill sim
        KILL sim-1000000000000
        = killing sim-1000000000000
        > update sim TASK_KILLED message=bye
        > show sim
        = task sim-1000000000000 TASK_KILLED
        | t=1000 submitted: submitted
        | t=1010 placement: 1 offer, 0 examined: not placed: no offer with nodetype=lab (×3 since 1970-01-01T00:16:40Z)
        | t=1010 placement: 1 offer, 1 examined: placed on slave2, most free mem among nodetype=lab
        | t=1010 launched: launch sent to slave2
        | t=1010 status: TASK_RUNNING
        | t=1010 status: TASK_RUNNING (REASON_RECONCILIATION)
        | t=1010 killed: kill requested by user
        | t=1010 status: TASK_KILLED: bye
        > events
        ~ t=1010 task_killed sim-1000000000000 by=user
        ~ t=1010 task_status sim-1000000000000 TASK_KILLED reason=- message=bye node=slave2
        > show nope
        = not found: no task with internal id nope (live, or ended and still kept)
        > events
        ",
    );
}

#[test]
fn a_restart_and_a_reshuffle_link_the_old_task_and_its_replacement() {
    check(
        "
        subscribed
        submit web mem=100 restart=on-failure
        offer slave2
        update web TASK_RUNNING
        tick 1
        update web TASK_FAILED reason=REASON_COMMAND_EXECUTOR_FAILED message=exit
        events
        show web-1000
        show web-1001
        submit move mem=100 reshuffle
        offer slave2
        update move TASK_RUNNING
        intel move nodename slave3
        reshuffle
        events
        show move-1001000000001
        show move-1001000000002
        ",
        "
        > subscribed
        RECONCILE all
        > submit web mem=100 restart=on-failure
        = submitted web
        > offer slave2
        LAUNCH on slave2: web-1000000000000
        SUPPRESS
        > update web TASK_RUNNING
        > tick 1
        > update web TASK_FAILED reason=REASON_COMMAND_EXECUTOR_FAILED message=exit
        REVIVE
        > events
        ~ t=1000 subscribed fw
        ~ t=1000 task_submitted web-1000000000000 id=web
        ~ t=1000 node_joined slave2 slave2
        ~ t=1000 task_placed web-1000000000000 on slave2: 1 offer, 1 examined: placed on slave2, most free mem
        ~ t=1000 task_launched web-1000000000000 on slave2
        ~ t=1000 task_status web-1000000000000 TASK_RUNNING reason=- message=- node=slave2
        ~ t=1001 task_status web-1000000000000 TASK_FAILED reason=REASON_COMMAND_EXECUTOR_FAILED message=exit node=slave2
        ~ t=1001 task_submitted web-1001000000000 id=web
        ~ t=1001 task_restarted web-1000000000000 -> web-1001000000000 restarts=1 delay=1
        > show web-1000
        = task web-1000000000000 TASK_FAILED
        | t=1000 submitted: submitted
        | t=1000 placement: 1 offer, 1 examined: placed on slave2, most free mem
        | t=1000 launched: launch sent to slave2
        | t=1000 status: TASK_RUNNING
        | t=1001 status: TASK_FAILED (REASON_COMMAND_EXECUTOR_FAILED): exit
        | t=1001 restarted: restart 1 as web-1001000000000 in 1s
        > show web-1001
        = task web-1001000000000 pending
        | t=1001 submitted: restart 1 of web-1000000000000, waits 1s first
        > submit move mem=100 reshuffle
        = submitted move
        > offer slave2
        LAUNCH on slave2: move-1001000000001
        > update move TASK_RUNNING
        > intel move nodename slave3
        = intelligence changed
        > reshuffle
        KILL move-1001000000001
        = reshuffle move-1001000000001 from slave2 to slave3 nodename=slave3
        > events
        ~ t=1001 task_submitted move-1001000000001 id=move
        ~ t=1001 task_placed move-1001000000001 on slave2: 1 offer, 1 examined: placed on slave2, most free mem
        ~ t=1001 task_launched move-1001000000001 on slave2
        ~ t=1001 task_status move-1001000000001 TASK_RUNNING reason=- message=- node=slave2
        ~ t=1001 intelligence_changed move/nodename=slave3 source=rest
        ~ t=1001 task_submitted move-1001000000002 id=move
        ~ t=1001 task_moved move-1001000000001 -> move-1001000000002 from=slave2 to=slave3
        ~ t=1001 task_killed move-1001000000001 by=reshuffle
        > show move-1001000000001
        = task move-1001000000001 TASK_RUNNING
        | t=1001 submitted: submitted
        | t=1001 placement: 1 offer, 1 examined: placed on slave2, most free mem
        | t=1001 launched: launch sent to slave2
        | t=1001 status: TASK_RUNNING
        | t=1001 moved: reshuffle: replaced by move-1001000000002
        | t=1001 killed: kill requested by reshuffle
        > show move-1001000000002
        = task move-1001000000002 pending
        | t=1001 submitted: replaces move-1001000000001 (reshuffle)
        ",
    );
}

#[test]
fn a_lost_launch_keeps_its_history_under_the_new_id() {
    check(
        "
        subscribed
        submit lost mem=100
        offer slave2
        update lost TASK_DROPPED invalid message=gone
        events
        show lost
        ",
        "
        > subscribed
        RECONCILE all
        > submit lost mem=100
        = submitted lost
        > offer slave2
        LAUNCH on slave2: lost-1000000000000
        SUPPRESS
        > update lost TASK_DROPPED invalid message=gone
        REVIVE
        > events
        ~ t=1000 subscribed fw
        ~ t=1000 task_submitted lost-1000000000000 id=lost
        ~ t=1000 node_joined slave2 slave2
        ~ t=1000 task_placed lost-1000000000000 on slave2: 1 offer, 1 examined: placed on slave2, most free mem
        ~ t=1000 task_launched lost-1000000000000 on slave2
        ~ t=1000 task_status lost-1000000000000 TASK_DROPPED reason=REASON_INVALID_OFFERS message=Task launched with invalid offers: Offer o1 is no longer valid node=slave2
        ~ t=1000 task_submitted lost-1000000000001 id=lost
        > show lost
        = task lost-1000000000001 pending
        | t=1000 submitted: submitted
        | t=1000 placement: 1 offer, 1 examined: placed on slave2, most free mem
        | t=1000 launched: launch sent to slave2
        | t=1000 status: TASK_DROPPED (REASON_INVALID_OFFERS): Task launched with invalid offers: Offer o1 is no longer valid
        | t=1000 relaunched: launch lost (TASK_DROPPED: Task launched with invalid offers: Offer o1 is no longer valid), waits again as lost-1000000000001
        ",
    );
}
