//! The thread count candle runs its products with, settled once per process.
//!
//! candle asks for that count on every f32 matrix product (attention runs several per layer and
//! sequence), and unless RAYON_NUM_THREADS is set it counts the physical cores each time by reading
//! /proc/cpuinfo: measured with strace, about fifty file opens per decoding step of one sequence,
//! eight times that in a batched step. Setting the variable to candle's own answer once made an
//! 8-sequence step 1.3-1.4x faster and one sequence about 1.1x (`step_bench`, interleaved runs).

/// Sets RAYON_NUM_THREADS to the count candle would use, unless the environment already sets it.
/// Call at the start of `main`, before any other thread exists: the environment is process-wide.
pub fn settle() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let count = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", count.to_string());
    }
}
