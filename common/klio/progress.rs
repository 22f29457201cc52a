//! What a progress display is told while a run goes. The display itself
//! (a bar, periodic lines) belongs to the CLI; the layers below only call
//! this trait, so they never draw anything themselves.

/// Receives a run's progress.
pub trait Progress: Send {
    /// Grows the totals (work discovered while running).
    fn add_total(&mut self, files: u64, bytes: u64);
    /// Counts one finished file.
    fn file_done(&mut self, bytes: u64, failed: bool);
    /// Called about once a second, so a periodic display can print.
    fn tick(&mut self);
    /// The run is over; the summary prints next.
    fn finish(&mut self);
}

/// A display that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn add_total(&mut self, _files: u64, _bytes: u64) {}
    fn file_done(&mut self, _bytes: u64, _failed: bool) {}
    fn tick(&mut self) {}
    fn finish(&mut self) {}
}
