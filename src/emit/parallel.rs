//! Spreading independent work over the cores, only when it is worth it.

/// Fewest items worth a thread of their own: reading a file takes tens of
/// microseconds, starting threads (and asking how many cores there are)
/// hundreds; the 23 stock headers are read faster on one thread.
const PER_THREAD: usize = 32;

/// `f` over `items` on up to as many threads as there are cores (one per
/// [`PER_THREAD`] items), results in the order of `items`.
pub(super) fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() < 2 * PER_THREAD {
        return items.iter().map(f).collect();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / PER_THREAD);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("input reader thread panicked"))
            .collect()
    })
}
