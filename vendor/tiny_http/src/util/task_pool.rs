use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Manages a collection of threads.
///
/// A new thread is created every time all the existing threads are full.
/// Any idle thread will automatically die after a few seconds.
pub struct TaskPool {
    sharing: Arc<Sharing>,
    // starts an OS thread; a test puts a failing one in
    spawner: Spawner,
}

/// Starts a thread running the given function, or says why it cannot.
type Spawner = fn(Box<dyn FnOnce() + Send>) -> std::io::Result<()>;

/// The `Spawner` of every real pool.
fn os_thread(code: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    thread::Builder::new().spawn(code).map(drop)
}

struct Sharing {
    // list of the tasks to be done by worker threads
    todo: Mutex<VecDeque<Box<dyn FnMut() + Send>>>,

    // condvar that will be notified whenever a task is added to `todo`
    condvar: Condvar,

    // number of total worker threads running
    active_tasks: AtomicUsize,

    // number of idle worker threads
    waiting_tasks: AtomicUsize,
}

/// Minimum number of active threads.
static MIN_THREADS: usize = 4;

struct Registration<'a> {
    nb: &'a AtomicUsize,
}

impl<'a> Registration<'a> {
    fn new(nb: &'a AtomicUsize) -> Registration<'a> {
        nb.fetch_add(1, Ordering::Release);
        Registration { nb }
    }
}

impl<'a> Drop for Registration<'a> {
    fn drop(&mut self) {
        self.nb.fetch_sub(1, Ordering::Release);
    }
}

impl TaskPool {
    pub fn new() -> TaskPool {
        TaskPool::with_spawner(os_thread)
    }

    fn with_spawner(spawner: Spawner) -> TaskPool {
        let pool = TaskPool {
            sharing: Arc::new(Sharing {
                todo: Mutex::new(VecDeque::new()),
                condvar: Condvar::new(),
                active_tasks: AtomicUsize::new(0),
                waiting_tasks: AtomicUsize::new(0),
            }),
            spawner,
        };

        for _ in 0..MIN_THREADS {
            pool.add_thread(None)
        }

        pool
    }

    /// Executes a function in a thread.
    /// If no thread is available, spawns a new one.
    pub fn spawn(&self, code: Box<dyn FnMut() + Send>) {
        let mut queue = self.sharing.todo.lock().unwrap();

        // A waiting thread that was already notified for an earlier queued task
        // still counts in `waiting_tasks` until it takes that task, so queue only
        // while there are more waiting threads than queued tasks: otherwise a
        // burst of tasks is queued with no thread left to run them.
        if self.sharing.waiting_tasks.load(Ordering::Acquire) > queue.len() {
            queue.push_back(code);
            self.sharing.condvar.notify_one();
        } else {
            self.add_thread(Some(code));
        }
    }

    fn add_thread(&self, initial_fn: Option<Box<dyn FnMut() + Send>>) {
        let sharing = self.sharing.clone();

        let spawned = (self.spawner)(Box::new(move || {
            let sharing = sharing;
            let _active_guard = Registration::new(&sharing.active_tasks);

            if let Some(mut f) = initial_fn {
                f();
            }

            loop {
                let mut task: Box<dyn FnMut() + Send> = {
                    let mut todo = sharing.todo.lock().unwrap();

                    let task;
                    loop {
                        if let Some(poped_task) = todo.pop_front() {
                            task = poped_task;
                            break;
                        }
                        let _waiting_guard = Registration::new(&sharing.waiting_tasks);

                        let received =
                            if sharing.active_tasks.load(Ordering::Acquire) <= MIN_THREADS {
                                todo = sharing.condvar.wait(todo).unwrap();
                                true
                            } else {
                                let (new_lock, waitres) = sharing
                                    .condvar
                                    .wait_timeout(todo, Duration::from_millis(5000))
                                    .unwrap();
                                todo = new_lock;
                                !waitres.timed_out()
                            };

                        if !received && todo.is_empty() {
                            return;
                        }
                    }

                    task
                };

                task();
            }
        }));
        // Out of threads (EAGAIN, a tasks limit) or memory: the task, a
        // connection, goes down with the closure, which closes it; the pool,
        // and the accept loop that called it, go on. (`thread::spawn`
        // panicked here, ending the accept loop, or the process where
        // panics abort.)
        if let Err(err) = spawned {
            log::error!("Cannot start a thread, dropping its task: {}", err);
        }
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.sharing
            .active_tasks
            .store(999_999_999, Ordering::Release);
        self.sharing.condvar.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn no_threads(_code: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable",
        ))
    }

    /// P11: with no thread to be had, `spawn` drops the task (closing its
    /// connection) instead of panicking. Unpatched, `thread::spawn`
    /// panicked on the accept thread.
    #[test]
    fn a_failed_thread_start_drops_the_task() {
        let pool = TaskPool::with_spawner(no_threads);
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(Arc::clone(&dropped));
        let ran = Arc::new(AtomicBool::new(false));
        let ran_inside = Arc::clone(&ran);
        pool.spawn(Box::new(move || {
            let _flag = &flag;
            ran_inside.store(true, Ordering::SeqCst);
        }));
        assert!(dropped.load(Ordering::SeqCst), "the task was kept");
        assert!(!ran.load(Ordering::SeqCst), "the task ran without a thread");
    }
}
