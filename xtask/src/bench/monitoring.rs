//! `monitoring`: what watching a run costs, measured as the records per second a pipeline
//! loses when it runs with the subscribers `weave run` attaches.
//!
//! Each pipeline runs without subscribers and with a [`LogSubscriber`] plus a
//! [`MetricsCollector`] (as `weave run` attaches them). No logger is installed in xtask,
//! so the log calls are filtered out after one check of the level, as in a `weave run` at
//! its default level, `warn`, where no per-batch line passes.
//!
//! - **throughput pipeline**: the `throughput` scenario's one million records through four
//!   fused column-wise transforms, in batches of 8,192, on 1 and on 2 threads. A run sends
//!   about 750 events (one per batch per step), each spread over a thousand records or so:
//!   the target is a cost of at most 3% of the records per second.
//! - **small batches**: the `overhead` scenario's chain of 10 fused no-op transforms over
//!   200,000 one-record batches, on its 2 threads, where every record costs twelve events
//!   (source, ten steps, sink): the worst case for a subscriber, shown for information (no
//!   target). It also runs with a subscriber that does nothing, which tells the cost of
//!   making and handing out the events from the cost of the collector's work.
//!
//! The variants of each pipeline run in turn, each round starting one variant further on,
//! so that a drift in the machine's speed falls on all alike, and the median records per
//! second of each are reported. The cost is `1 - monitored / unmonitored` records per
//! second, in percent, taken in each round (two runs made one after the other) and the
//! median over the rounds reported: a load that comes and goes on the machine moves it
//! less than the ratio of the two medians (printed on stderr as a check). To tell what
//! the cost is made of, `on_event` is also timed on its own: the collector's on one thread,
//! on two threads sharing one collector (it takes one `Mutex` per event) and on two threads
//! with a collector each; the log subscriber's; and a bare uncontended `Mutex` lock.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use weave_core::{Event, Subscriber};
use weave_exec::{ExecOptions, LogSubscriber};
use weave_monitor::MetricsCollector;

use super::{Figure, Report, Target, median, overhead, thousands, throughput, time};

/// Timed runs of each throughput variant; one run is about 0.3 s on 1 thread, 0.15 s on 2.
const REPS: usize = 17;
/// One-record batches per small-batch run.
const SMALL_BATCHES: u64 = 200_000;
/// Timed runs of each small-batch variant; one run is about 2 to 2.5 s.
const SMALL_REPS: usize = 5;
/// The most that monitoring may cost the throughput pipeline, in percent of records/s.
const MAX_COST: f64 = 3.0;
/// Events per timing of `on_event` alone.
const MICRO_EVENTS: u32 = 1_000_000;

/// What a run is watched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// No subscribers: the executor does not even make the events.
    Off,
    /// A subscriber that does nothing: what making and handing out the events costs.
    Empty,
    /// A [`LogSubscriber`] and a [`MetricsCollector`], as `weave run` attaches them.
    Monitored,
}

impl Watch {
    fn label(self) -> &'static str {
        match self {
            Watch::Off => "no subscribers",
            Watch::Empty => "an empty subscriber",
            Watch::Monitored => "MetricsCollector + LogSubscriber",
        }
    }

    /// The run's options, and the collector to check afterwards if there is one.
    fn options(self) -> (ExecOptions, Option<Arc<MetricsCollector>>) {
        let metrics = Arc::new(MetricsCollector::new());
        let (subscribers, metrics): (Vec<Arc<dyn Subscriber>>, _) = match self {
            Watch::Off => (Vec::new(), None),
            Watch::Empty => (vec![Arc::new(EmptySubscriber)], None),
            Watch::Monitored => (vec![Arc::new(LogSubscriber), metrics.clone()], Some(metrics)),
        };
        (ExecOptions { subscribers, ..ExecOptions::default() }, metrics)
    }
}

/// Hears every event and does nothing with it.
struct EmptySubscriber;

impl Subscriber for EmptySubscriber {
    fn on_event(&self, event: &Event) {
        black_box(event);
    }
}

pub(super) fn run(report: &mut Report) {
    let rows = throughput::ROWS as u64;
    report.progress(format!("generating {} records", thousands(rows)));
    let (batches, expected) = {
        let raw = throughput::generate(throughput::ROWS, throughput::SEED);
        (throughput::build_batches(&raw), throughput::hand_written(&raw))
    };
    report.progress(format!(
        "throughput pipeline: {} records in {} batches on 1 and 2 threads, {REPS} interleaved runs of each variant",
        thousands(rows),
        batches.len()
    ));
    let mut events = 0;
    let mut run_throughput = |(threads, watch): (usize, Watch)| {
        let (options, metrics) = watch.options();
        let (elapsed, tally, _) = throughput::run_pipeline_with(&batches, threads, options);
        assert_eq!(tally, expected, "monitoring: the pipeline on {threads} thread(s) disagrees with the loop");
        if let Some(m) = metrics {
            let source = m.step("source").map_or(0, |s| s.records_out);
            let sink = m.step("tally").map_or(0, |s| s.records_in);
            assert_eq!((source, sink), (rows, expected.records), "monitoring: the collector missed events");
            events = events_seen(&m);
        }
        elapsed
    };
    // [1 thread, 2 threads][unmonitored, monitored]: each round runs the two variants of a
    // thread count one after the other, so that their paired costs compare runs close in time.
    let mut times: [Vec<Vec<Duration>>; 2] = Default::default();
    for rep in 0..REPS {
        for (k, threads) in [1, 2].into_iter().enumerate() {
            let variants = [(threads, Watch::Off), (threads, Watch::Monitored)];
            round(rep + k, &variants, &mut times[k], &mut run_throughput);
        }
    }
    drop(batches);

    report.progress(format!(
        "small batches: {} one-record batches through {} fused no-ops on {} threads, {SMALL_REPS} interleaved runs of each variant",
        thousands(SMALL_BATCHES),
        overhead::STEPS,
        overhead::THREADS
    ));
    let template = overhead::template();
    let small_variants = [Watch::Off, Watch::Empty, Watch::Monitored];
    let mut small_events = 0;
    let small = interleaved(SMALL_REPS, &small_variants, |watch| {
        let (options, metrics) = watch.options();
        let elapsed = overhead::time_run_with(&template, false, SMALL_BATCHES, options);
        if let Some(m) = metrics {
            let calls = m.step("count").map_or(0, |s| s.calls);
            assert_eq!(calls, SMALL_BATCHES, "monitoring: the collector missed events");
            small_events = events_seen(&m);
        }
        elapsed
    });

    report.progress("timing on_event alone");
    let (c1, c2) = (MetricsCollector::new(), MetricsCollector::new());
    let collector_1 = per_event(&[&c1]);
    let collector_shared = per_event(&[&c1, &c1]);
    let collector_own = per_event(&[&c1, &c2]);
    let log_1 = per_event(&[&LogSubscriber]);
    let mutex_1 = bare_mutex();

    // The figures.
    for (k, threads) in [1, 2].into_iter().enumerate() {
        let (off, on) = (median(times[k][0].clone()), median(times[k][1].clone()));
        let what = format!("throughput pipeline, {threads} thread{}", if threads == 1 { "" } else { "s" });
        let off_rate = rate(rows, off);
        report.add(Figure::new(format!("{what}, no subscribers: records/s"), off_rate, "records/s").ratio(1.0));
        let on_rate = rate(rows, on);
        report.add(
            Figure::new(format!("{what}, {}: records/s", Watch::Monitored.label()), on_rate, "records/s")
                .ratio(on_rate / off_rate),
        );
        report.add(
            Figure::new(format!("{what}: monitoring cost (median of paired runs)"), paired_cost(&times[k]), "%")
                .target(Target::AtMost(MAX_COST)),
        );
        let on_event = events as f64 * (collector_1 + log_1) * 1e-9;
        report.progress(format!(
            "{what}: {} events per monitored run, {:.0} records per event; at {:.0} ns each (on_event alone) that is {:.3} ms of a {:.0} ms run ({:.3}%); measured: {:+.1} ms between the medians, a cost of {:.2}% from them ({:.2}% from the fastest runs)",
            thousands(events),
            rows as f64 / events as f64,
            collector_1 + log_1,
            on_event * 1e3,
            off.as_secs_f64() * 1e3,
            on_event / off.as_secs_f64() * 100.0,
            (on.as_secs_f64() - off.as_secs_f64()) * 1e3,
            cost(off_rate, on_rate),
            cost(rate(rows, fastest(&times[k][0])), rate(rows, fastest(&times[k][1]))),
        ));
    }
    let what = format!("{} fused no-ops, one-record batches, {} threads", overhead::STEPS, overhead::THREADS);
    let small_medians: Vec<Duration> = small.iter().cloned().map(median).collect();
    let off_rate = rate(SMALL_BATCHES, small_medians[0]);
    report.add(Figure::new(format!("{what}, no subscribers: records/s"), off_rate, "records/s").ratio(1.0));
    for (i, watch) in small_variants.into_iter().enumerate().skip(1) {
        let on_rate = rate(SMALL_BATCHES, small_medians[i]);
        report.add(
            Figure::new(format!("{what}, {}: records/s", watch.label()), on_rate, "records/s")
                .ratio(on_rate / off_rate),
        );
    }
    for (i, watch) in small_variants.into_iter().enumerate().skip(1) {
        let name = match watch {
            Watch::Monitored => format!("{what}: monitoring cost (median of paired runs)"),
            _ => format!("{what}: cost of {} (median of paired runs)", watch.label()),
        };
        report.add(Figure::new(name, paired_cost(&[small[0].clone(), small[i].clone()]), "%"));
        report.progress(format!(
            "small batches, {}: {:+.0} ns per event between the medians ({} events per run), a cost of {:.2}% from them",
            watch.label(),
            (small_medians[i].as_secs_f64() - small_medians[0].as_secs_f64()) * 1e9 / small_events as f64,
            thousands(small_events),
            cost(off_rate, rate(SMALL_BATCHES, small_medians[i])),
        ));
    }
    report.add(Figure::new("MetricsCollector::on_event (BatchFinished), 1 thread: per event", collector_1, "ns"));
    report.add(Figure::new(
        "MetricsCollector::on_event, 2 threads at once on one collector: per event",
        collector_shared,
        "ns",
    ));
    report.add(Figure::new(
        "MetricsCollector::on_event, 2 threads at once, a collector each: per event",
        collector_own,
        "ns",
    ));
    report.add(Figure::new("LogSubscriber::on_event (BatchFinished), no logger: per event", log_1, "ns"));
    report.add(Figure::new("an uncontended Mutex lock and unlock, for comparison", mutex_1, "ns"));
}

/// Runs every variant `reps` times, in rounds, each round starting one variant further on
/// so that none is always first (a drift in the machine's speed falls on all alike);
/// returns the times of each variant, in the order of `variants`.
fn interleaved<V: Copy>(reps: usize, variants: &[V], mut run: impl FnMut(V) -> Duration) -> Vec<Vec<Duration>> {
    let mut times = Vec::new();
    for rep in 0..reps {
        round(rep, variants, &mut times, &mut run);
    }
    times
}

/// Runs each of `variants` once, starting at number `rep` (modulo their count), and adds
/// the times to `times` (one list per variant, made when missing).
fn round<V: Copy>(rep: usize, variants: &[V], times: &mut Vec<Vec<Duration>>, run: &mut impl FnMut(V) -> Duration) {
    times.resize_with(variants.len(), Vec::new);
    for i in 0..variants.len() {
        let k = (i + rep) % variants.len();
        times[k].push(run(variants[k]));
    }
}

/// The shortest of some timings.
fn fastest(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

/// Records per second.
fn rate(records: u64, d: Duration) -> f64 {
    records as f64 / d.as_secs_f64()
}

/// The share of the records per second lost, in percent.
fn cost(off_rate: f64, on_rate: f64) -> f64 {
    (1.0 - on_rate / off_rate) * 100.0
}

/// About how many events a run sent: one per successful call, a start and an end per step
/// and for the run (the runs here have no retries, failures or drops).
fn events_seen(m: &MetricsCollector) -> u64 {
    let steps = m.steps();
    steps.iter().map(|s| s.calls).sum::<u64>() + 2 * steps.len() as u64 + 2
}

/// The cost in percent of the second variant in `times` against the first: the median over
/// the rounds of each round's cost, which compares two runs made one after the other. Less
/// sensitive than the ratio of the medians to a load that comes and goes on the machine
/// (another build, say), which can slow one variant's runs more than the other's.
fn paired_cost(times: &[Vec<Duration>]) -> f64 {
    let (off, on) = (&times[0], &times[1]);
    let mut costs: Vec<f64> =
        off.iter().zip(on).map(|(off, on)| (1.0 - off.as_secs_f64() / on.as_secs_f64()) * 100.0).collect();
    costs.sort_by(f64::total_cmp);
    costs[costs.len() / 2]
}

/// Nanoseconds per `on_event` call with a `BatchFinished` event, as each of several threads
/// (one per subscriber in `subscribers`, all at once) sees it: the median of three timings.
/// The events name twelve steps in turn, as the small-batch chain's do.
fn per_event(subscribers: &[&dyn Subscriber]) -> f64 {
    let events: Vec<Event> = (0..12)
        .map(|k| Event::BatchFinished {
            step: format!("noop_{k}").into(),
            seq: 0,
            records_in: 1,
            records_out: 1,
            elapsed: Duration::from_nanos(500 + 100 * k),
        })
        .collect();
    let timings = (0..3)
        .map(|_| {
            let start = Barrier::new(subscribers.len());
            let walls: Vec<Duration> = std::thread::scope(|s| {
                let handles: Vec<_> = subscribers
                    .iter()
                    .map(|&subscriber| {
                        let (start, events) = (&start, &events);
                        s.spawn(move || {
                            start.wait();
                            let t0 = Instant::now();
                            for e in events.iter().cycle().take(MICRO_EVENTS as usize) {
                                black_box(subscriber).on_event(black_box(e));
                            }
                            t0.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| panic!("monitoring: a thread panicked")))
                    .collect()
            });
            walls.into_iter().max().unwrap_or_default()
        })
        .collect();
    median(timings).as_secs_f64() * 1e9 / f64::from(MICRO_EVENTS)
}

/// Nanoseconds to lock and unlock an uncontended `Mutex` (with an addition inside).
fn bare_mutex() -> f64 {
    let m = Mutex::new(0u64);
    let timings = (0..3)
        .map(|_| {
            time(|| {
                for _ in 0..MICRO_EVENTS {
                    *black_box(&m).lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
                }
            })
        })
        .collect();
    median(timings).as_secs_f64() * 1e9 / f64::from(MICRO_EVENTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_take_turns_at_going_first() {
        let mut seen = Vec::new();
        let times = interleaved(3, &['a', 'b', 'c'], |v| {
            seen.push(v);
            Duration::from_millis(u64::from(v as u8 - b'a'))
        });
        assert_eq!(seen.iter().collect::<String>(), "abcbcacab");
        assert_eq!(
            times,
            vec![vec![Duration::ZERO; 3], vec![Duration::from_millis(1); 3], vec![Duration::from_millis(2); 3]]
        );
    }

    #[test]
    fn each_variant_has_its_subscribers_and_the_collector_counts_events() {
        let counts = [Watch::Off, Watch::Empty, Watch::Monitored].map(|w| w.options().0.subscribers.len());
        assert_eq!(counts, [0, 1, 2]);
        let (_, metrics) = Watch::Monitored.options();
        let m = metrics.expect("a collector");
        let id: Arc<str> = "s".into();
        m.on_event(&Event::StepStarted { step: Arc::clone(&id) });
        for seq in 0..3 {
            m.on_event(&Event::BatchFinished {
                step: Arc::clone(&id),
                seq,
                records_in: 1,
                records_out: 1,
                elapsed: Duration::ZERO,
            });
        }
        assert_eq!(events_seen(&m), 3 + 2 + 2);
        assert!(Watch::Empty.options().1.is_none());
    }

    #[test]
    fn costs_are_the_share_of_throughput_lost() {
        assert!((cost(100.0, 97.0) - 3.0).abs() < 1e-9);
        let ms = |v: &[u64]| v.iter().map(|&x| Duration::from_millis(x)).collect::<Vec<_>>();
        assert!((paired_cost(&[ms(&[100, 100, 100]), ms(&[125, 200, 100])]) - 20.0).abs() < 1e-9);
    }
}
