//! Owns the slow lane: the low-priority threads a plugin call is moved to once it has run past
//! its allowance ([`SLOW_AFTER`], more for a batch: [`allowance`]), so that a long call (a plugin
//! that spins, or host work on its huge output) leaves the threads that serve requests to the
//! short calls. Two classes of threads ([`Class`]): `SCHED_IDLE` for calls that may wait, nice 19
//! for calls that must always progress. Also runs work handed to it whole that may wait for an
//! idle CPU ([`spawn`]). Runs futures; knows nothing of plugins, stores, HTTP or admission.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A call that has run this long (CPU time in its polls: in Wasm or host work, not waiting
/// for a slot, a host call or a busy worker, nor the time the OS gave its thread's CPU to
/// another: see [`Timed`]) is moved to the slow lane at its next pause (an epoch tick, or a
/// wait in a host call). Well-behaved admission calls run tens of microseconds to a few
/// milliseconds and never get here: they stay where they started, at the cost of one
/// allocation for the future and three clock reads per poll.
pub const SLOW_AFTER: Duration = Duration::from_millis(5);

/// A poll that took less wall-clock time than this counts as run for all of it; a longer one
/// counts for the CPU time its thread spent in it (see [`Timed`]).
const PREEMPTIBLE_ABOVE: Duration = Duration::from_millis(1);

/// What an audit sink's call may run, per event of its batch, on top of [`SLOW_AFTER`] before
/// it moves to the slow lane. A sink's call is as long as its batch (hundreds of events at tens
/// of microseconds each: a few to tens of milliseconds for a well-behaved sink), so a budget
/// per call would send every batch to the slow lane, where it starves behind intake and delivery
/// falls ever further behind. 250 µs is about ten times what `redact-secrets` takes per event
/// on a loaded core; a sink that spins still moves within `5 ms + 250 µs × events` (at most
/// 130 ms for the largest batch), and its next calls start there.
pub const SLOW_PER_EVENT: Duration = Duration::from_micros(250);

/// How long a call over `events` items (0 for an admission call) runs before it moves to the
/// slow lane.
pub fn allowance(events: usize) -> Duration {
    SLOW_AFTER
        .saturating_add(SLOW_PER_EVENT.saturating_mul(u32::try_from(events).unwrap_or(u32::MAX)))
}

/// The name of the slow lane's `SCHED_IDLE` threads.
pub const THREAD_NAME: &str = "wasmgate-slow";
/// The name of the slow lane's nice-19 threads.
pub const NICE_THREAD_NAME: &str = "wasmgate-nice";

/// Which threads of the slow lane a call moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `SCHED_IDLE` ([`lower_priority`]): a thread that serves requests always preempts it, and
    /// so does any other work on the machine. For admission calls and background scans, whose
    /// answer may wait (or miss its deadline) when the machine is busy.
    Idle,
    /// Nice 19 under `SCHED_OTHER`: the lowest weight, yet a share of the CPU however busy the
    /// machine is. For audit sinks: a call that is starved until its deadline fails, and a batch
    /// that fails `maxAttempts` times is dead-lettered, so a sink that was demoted on a loaded
    /// machine must still deliver.
    Nice,
}

/// The slow lane's runtime for `class`, started on first use and kept for the process's life
/// (one per process, shared by every [`super::Runtime`]); `None` if it could not be started,
/// in which case long calls stay where they are.
fn slow_lane(class: Class) -> Option<&'static Handle> {
    static IDLE: OnceLock<Option<Runtime>> = OnceLock::new();
    static NICE_LANE: OnceLock<Option<Runtime>> = OnceLock::new();
    let (lane, name, start): (_, _, fn()) = match class {
        Class::Idle => (&IDLE, THREAD_NAME, lower_priority),
        Class::Nice => (&NICE_LANE, NICE_THREAD_NAME, nice),
    };
    lane.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(threads)
            .thread_name(name)
            .on_thread_start(start)
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::error!(
                    "cannot start the slow lane, long plugin calls share the request threads: {e}"
                )
            })
            .ok()
    })
    .as_ref()
    .map(Runtime::handle)
}

/// The nice value of the slow lane's threads: the lowest priority a `SCHED_OTHER` thread can
/// have, what they run at should [`SCHED_IDLE`](lower_priority) be refused (and what `ps` shows).
pub const NICE: i32 = 19;

/// Puts the calling thread under `SCHED_IDLE` at nice [`NICE`], for good: for the slow lane's
/// threads, and for background work of the runtime's users (a reload's compile and load-time
/// checks) on a thread of its own. A `SCHED_OTHER` thread that wakes preempts a `SCHED_IDLE` one
/// at once, always; nice 19 alone was not enough on the EEVDF scheduler (Linux 6.6 and later),
/// where a running thread may keep its CPU to the end of its slice (milliseconds) whatever its
/// weight, and a short request waited behind a demoted plugin's call (RELIABILITY.md, the log
/// flood). Unprivileged threads may always lower their own priority (and, without
/// `CAP_SYS_NICE`, never raise it back: hence threads of their own).
pub fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!("slow lane thread is not under SCHED_IDLE: {e:?}");
    }
    nice();
}

/// Puts the calling thread at nice [`NICE`] (its scheduling class unchanged).
fn nice() {
    // On Linux the nice value is per thread: `None` is the calling thread.
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        tracing::warn!("slow lane thread keeps its nice value: setpriority({NICE}): {e}");
    }
}

/// Runs `future` on the slow lane's threads of `class`, detached: work that may wait for a CPU
/// nothing else wants (on `SCHED_IDLE`, [`Class::Idle`]). Gives `future` back if the lane could
/// not be started.
pub(super) fn spawn<F>(future: F, class: Class) -> Result<(), F>
where
    F: Future<Output = ()> + Send + 'static,
{
    match slow_lane(class) {
        Some(lane) => {
            drop(lane.spawn(future));
            Ok(())
        }
        None => Err(future),
    }
}

/// Why a call moved to the slow lane gave no answer (the lane's runtime dropped it).
#[derive(Debug, thiserror::Error)]
#[error("the slow lane dropped the call: {0}")]
pub struct Dropped(String);

/// Runs `future` where it is polled until it has run for `slow_after`, then on the slow
/// lane's threads of `class`; or, if `slow`, there from the start. Its output comes with the
/// time it ran (in its polls, wherever they were).
pub(super) fn run<F>(future: F, slow: bool, slow_after: Duration, class: Class) -> Lane<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let timed = Timed {
        future: Box::pin(future),
        ran: Duration::ZERO,
    };
    if slow && let Some(lane) = slow_lane(class) {
        return Lane(State::Moved(lane.spawn(timed)), slow_after, class);
    }
    Lane(State::Here(timed), slow_after, class)
}

impl<F: Future> Lane<F> {
    /// Whether the call is on the slow lane now.
    pub(super) fn on_lane(&self) -> bool {
        matches!(self.0, State::Moved(_))
    }
}

/// A future and the time it has run in its polls so far.
///
/// What a poll counts is the CPU time its thread spent in it, not the wall-clock time: on a
/// loaded machine the OS takes a worker's CPU for milliseconds at a time (to the load
/// generator, another worker, another process), and a 30 µs call caught by that looked like a
/// slow one. Its policy was demoted, and every call of it that started before one ended well
/// started on the `SCHED_IDLE` lane, which a busy machine starves: at c=16 on two cores, 16-46
/// such starts per policy in 20 s, and requests answered 20-60 ms late (p99.9; BENCHMARKS.md).
/// The thread's CPU clock is a system call (about 0.2 µs here, against 20 ns for the wall
/// clock), so it is read at the start of every poll and at its end only when the poll took
/// [`PREEMPTIBLE_ABOVE`] or more of wall-clock time; a shorter poll counts for all of it, which
/// is at most that much above its CPU time.
struct Timed<F> {
    future: Pin<Box<F>>,
    ran: Duration,
}

/// The CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, Duration);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (started, cpu) = (Instant::now(), thread_cpu_time());
        let polled = this.future.as_mut().poll(cx);
        let wall = started.elapsed();
        this.ran += if wall < PREEMPTIBLE_ABOVE {
            wall
        } else {
            thread_cpu_time().saturating_sub(cpu).min(wall)
        };
        polled.map(|output| (output, this.ran))
    }
}

/// The future [`run`] returns.
pub(super) struct Lane<F: Future>(State<F>, Duration, Class);

enum State<F: Future> {
    Here(Timed<F>),
    Moved(JoinHandle<(F::Output, Duration)>),
    Gone,
}

impl<F> Future for Lane<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<(F::Output, Duration), Dropped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (state, slow_after, class) = (&mut this.0, this.1, this.2);
        loop {
            match state {
                State::Here(timed) => {
                    if let Poll::Ready(done) = Pin::new(&mut *timed).poll(cx) {
                        *state = State::Gone;
                        return Poll::Ready(Ok(done));
                    }
                    if timed.ran < slow_after {
                        return Poll::Pending;
                    }
                    let Some(lane) = slow_lane(class) else {
                        return Poll::Pending;
                    };
                    let State::Here(timed) = std::mem::replace(state, State::Gone) else {
                        unreachable!()
                    };
                    // The lane polls it at once; wakers registered here are replaced then.
                    *state = State::Moved(lane.spawn(timed));
                }
                State::Moved(handle) => {
                    return match Pin::new(handle).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(done) => {
                            *state = State::Gone;
                            match done {
                                Ok(done) => Poll::Ready(Ok(done)),
                                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                                Err(e) => Poll::Ready(Err(Dropped(e.to_string()))),
                            }
                        }
                    };
                }
                State::Gone => panic!("a slow-lane future polled after it completed"),
            }
        }
    }
}

impl<F: Future> Drop for Lane<F> {
    fn drop(&mut self) {
        if let State::Moved(handle) = &self.0 {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread a future runs on now, its nice value and whether it is under `SCHED_IDLE`.
    fn here() -> (Option<String>, i32, bool) {
        let thread = std::thread::current().name().map(str::to_owned);
        let idle = thread_priority::thread_schedule_policy().unwrap()
            == thread_priority::ThreadSchedulePolicy::Normal(
                thread_priority::NormalThreadSchedulePolicy::Idle,
            );
        (
            thread,
            rustix::process::getpriority_process(None).unwrap(),
            idle,
        )
    }

    /// Keeps the CPU busy for `time` of the thread's CPU time.
    fn spin(time: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < time {
            std::hint::spin_loop();
        }
    }

    /// Runs for `time`, yielding every millisecond (as Wasm does at each epoch tick), then
    /// says where it ended.
    async fn busy_then_here(time: Duration) -> (Option<String>, i32, bool) {
        let start = std::time::Instant::now();
        while start.elapsed() < time {
            spin(Duration::from_millis(1));
            tokio::task::yield_now().await;
        }
        here()
    }

    /// Runs `call` as an admission call and checks that it ended on the caller's thread,
    /// having run less than the lane's allowance.
    async fn stays_where_it_started(
        call: impl Future<Output = (Option<String>, i32, bool)> + Send + 'static,
        caller: &(Option<String>, i32, bool),
    ) {
        let (place, ran) = run(call, false, SLOW_AFTER, Class::Idle).await.unwrap();
        assert_eq!(&place, caller);
        assert!(ran < SLOW_AFTER, "{ran:?}");
    }

    /// Where a call on the slow lane runs.
    fn lane() -> (Option<String>, i32, bool) {
        (Some(THREAD_NAME.to_owned()), NICE, true)
    }

    /// Where an audit sink's call on the slow lane runs: nice 19, not `SCHED_IDLE`.
    fn nice_lane() -> (Option<String>, i32, bool) {
        (Some(NICE_THREAD_NAME.to_owned()), NICE, false)
    }

    /// Work spawned on the lane (the making of an instance ahead of its call) runs there,
    /// detached: on a `SCHED_IDLE` thread, never on the caller's.
    #[tokio::test]
    async fn spawned_work_runs_on_the_lane() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = spawn(
            async move {
                tx.send(here()).unwrap();
            },
            Class::Idle,
        );
        assert!(spawned.is_ok(), "the lane could not be started");
        assert_eq!(rx.await.unwrap(), lane());
    }

    #[tokio::test]
    async fn a_call_that_runs_past_slow_after_moves_to_low_priority_threads_and_a_short_one_stays()
    {
        let caller = here();
        assert!(
            caller.1 < NICE && !caller.2,
            "the test itself runs at a higher priority"
        );
        // A short call that pauses (a tick) finishes where it started.
        stays_where_it_started(
            async {
                tokio::task::yield_now().await;
                here()
            },
            &caller,
        )
        .await;
        // So does one whose thread did not run for longer than the lane's allowance (the OS
        // gave its CPU to others): a sleep stands for that, in one poll and over several.
        stays_where_it_started(
            async {
                std::thread::sleep(SLOW_AFTER * 2);
                here()
            },
            &caller,
        )
        .await;
        stays_where_it_started(
            async {
                for _ in 0..3 {
                    std::thread::sleep(SLOW_AFTER);
                    tokio::task::yield_now().await;
                }
                here()
            },
            &caller,
        )
        .await;
        // Unless it is asked to start on the lane.
        let sent = run(async { here() }, true, SLOW_AFTER, Class::Idle);
        assert_eq!(sent.await.unwrap().0, lane());
        // An audit sink's call goes to nice-19 threads that are not `SCHED_IDLE`, where it
        // keeps a share of the CPU however busy the machine is.
        let sink = run(async { here() }, true, SLOW_AFTER, Class::Nice);
        assert_eq!(sink.await.unwrap().0, nice_lane());
        // A call that keeps running (yielding at each "tick", as Wasm does) is moved, and
        // what it does after runs on a `SCHED_IDLE` lane thread.
        let long = run(
            busy_then_here(SLOW_AFTER * 2),
            false,
            SLOW_AFTER,
            Class::Idle,
        );
        let (place, ran) = long.await.unwrap();
        assert_eq!(place, lane());
        // The same for the nice-19 class.
        let long_sink = run(
            busy_then_here(SLOW_AFTER * 2),
            false,
            SLOW_AFTER,
            Class::Nice,
        );
        assert_eq!(long_sink.await.unwrap().0, nice_lane());
        // Run time counts its polls only: not the wait for a lane thread between two of them,
        // so a call that took 10 ms of wall clock may have run a little less.
        assert!(ran >= SLOW_AFTER, "{ran:?}");
        // The same work as a sink's call over 100 events stays: its allowance is per event.
        let batch = run(
            busy_then_here(SLOW_AFTER * 2),
            false,
            allowance(100),
            Class::Idle,
        );
        let (place, ran) = batch.await.unwrap();
        assert_eq!(place, caller, "ran {ran:?} of {:?}", allowance(100));
        // Dropping a moved call drops its future on the lane.
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let mut endless = Box::pin(run(
            async move {
                let _tell = dropped_tx;
                loop {
                    spin(Duration::from_millis(1));
                    tokio::task::yield_now().await;
                }
            },
            false,
            SLOW_AFTER,
            Class::Idle,
        ));
        let _ = tokio::time::timeout(SLOW_AFTER * 3, &mut endless).await;
        assert!(matches!(endless.0, State::Moved(_)));
        drop(endless);
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("the moved call is dropped")
            .unwrap_err();
    }
}
