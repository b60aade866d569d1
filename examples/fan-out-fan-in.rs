//! Fan-out / fan-in: Go's `gen → 3 × square → merge`, in Rust, three ways.
//!
//! Shows the thread pipeline (results as they finish, then in input order)
//! and the tokio pipeline, and what happens on the first error.
//!
//!     cargo run --example fan-out-fan-in
//!
//! Needs no server.

use std::convert::Infallible;

use concurrency_patterns::patterns::pipeline::{
    Options, Order, PipelineError, tasks, threads,
};

fn main() -> anyhow::Result<()> {
    // ANCHOR: threads
    // gen(10): the numbers 1..=10; square: three workers; merge: the output.
    let squares = threads::run(Options::default().workers(3), 1..=10u64, |n| {
        Ok::<_, Infallible>(n * n)
    })?;
    let unordered: Vec<u64> = squares.map(Result::unwrap).collect();
    println!("threads, as they finish: {unordered:?}");

    let in_order = Options::default().workers(3).order(Order::Preserved);
    let squares = threads::run(in_order, 1..=10u64, |n| Ok::<_, Infallible>(n * n))?;
    let ordered: Vec<u64> = squares.map(Result::unwrap).collect();
    println!("threads, in input order: {ordered:?}");
    // ANCHOR_END: threads
    anyhow::ensure!(
        ordered == (1..=10).map(|n| n * n).collect::<Vec<_>>(),
        "order was not preserved"
    );

    // ANCHOR: first_error
    // The first error stops the source and the workers, and is the last item.
    let stage = |n: u64| {
        if n == 7 {
            Err(format!("cannot square {n}"))
        } else {
            Ok(n * n)
        }
    };
    let results: Vec<_> =
        threads::run(Options::default().workers(3), 1..=1_000_000u64, stage)?.collect();
    let error = results.last().cloned();
    println!(
        "with a failing stage: {} results, then {error:?}",
        results.len() - 1
    );
    // ANCHOR_END: first_error
    anyhow::ensure!(
        error == Some(Err(PipelineError::Stage("cannot square 7".into()))),
        "the pipeline did not stop on the error"
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let sum = runtime.block_on(async {
        // ANCHOR: tasks
        let mut squares =
            tasks::run(Options::default().workers(3), 1..=10u64, |n| async move {
                // An async stage: a network call would go here.
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(n * n)
            })?;
        let mut sum = 0;
        while let Some(square) = squares.next().await {
            sum += square?;
        }
        // ANCHOR_END: tasks
        Ok::<_, anyhow::Error>(sum)
    })?;
    println!("tokio tasks, sum of squares: {sum}");
    anyhow::ensure!(sum == 385, "wrong sum {sum}");
    Ok(())
}
