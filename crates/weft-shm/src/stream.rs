//! Streaming mode of the reliable broadcast reader. (The SPSC reader had it
//! too until session 14 of issue 18; see `spsc`'s module doc for why it no
//! longer does.)
//!
//! Reading headers costs a streaming reader dearly when it has caught up:
//! the next header is in the cache line the producer is writing, so every
//! empty poll takes that line from the producer (docs/shm.md, "Throughput:
//! where the time goes"). A reader handed [`STREAMING_FRAMES`] or more
//! frames in a poll therefore looks at the producer's `tail` (a line of its
//! own) instead, and reads only frames that end in lines the producer has
//! finished (below `tail` rounded down to a line), or up to `tail` when that
//! leaves nothing: a poll never returns 0 while `tail` shows a frame.
//!
//! It goes back to headers after [`STREAMING_EMPTY_POLLS`] empty polls in a
//! row (the stream paused, or a producer died between a header store and its
//! `tail` store), or after [`STREAMING_SINGLE_POLLS`] polls in a row of one
//! frame each (a round trip). A round trip's reader, one frame a poll, never
//! leaves header mode.

/// A poll that hands over at least this many frames turns streaming on.
#[cfg(not(loom))]
pub(crate) const STREAMING_FRAMES: usize = 8;
/// Under loom a ring holds two frames: every delivering poll streams, so
/// the models explore the `tail` hint and the fallback to headers.
#[cfg(loom)]
pub(crate) const STREAMING_FRAMES: usize = 1;

/// Empty polls in a row after which a streaming reader goes back to
/// headers: `tail` is a hint, and a producer that died between a header
/// store and its `tail` store leaves a frame only the header shows.
#[cfg(not(loom))]
pub(crate) const STREAMING_EMPTY_POLLS: u32 = 256;
#[cfg(loom)]
pub(crate) const STREAMING_EMPTY_POLLS: u32 = 2;

/// One-frame polls in a row after which a streaming reader goes back to
/// headers: a round trip's reader pays the look at `tail` for a few frames
/// after a burst, not for ever.
pub(crate) const STREAMING_SINGLE_POLLS: u32 = 64;

/// What a poll may read, from [`Streaming::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// Header mode: frames as their headers show them.
    Headers,
    /// Frames ending at or below this position.
    Upto(u64),
    /// Nothing: not even the next header.
    Empty,
}

/// A reader's streaming state.
#[derive(Debug, Default)]
pub(crate) struct Streaming {
    /// Streaming mode is on.
    pub(crate) on: bool,
    /// The producer's `tail` when last looked at (a hint).
    tail_seen: u64,
    /// The last poll stopped at a frame ending past the lines it could read:
    /// look at `tail` again.
    at_limit: bool,
    /// Empty polls in a row while on.
    empty: u32,
    /// Polls in a row that handed over exactly one frame while on.
    single: u32,
}

impl Streaming {
    /// Before a poll of a reader at `pos`: what it may read. `tail` loads the
    /// producer's position (Relaxed: a hint; frames are still found and
    /// ordered by their headers' Acquire loads); it is called only when what
    /// was seen before is used up.
    #[inline(always)]
    pub(crate) fn begin(&mut self, pos: u64, tail: impl FnOnce() -> u64) -> Window {
        if !self.on {
            return Window::Headers;
        }
        let mut upto = self.tail_seen & !63;
        if pos >= upto || self.at_limit {
            self.at_limit = false;
            let t = tail();
            self.tail_seen = t;
            // Whole lines, or the producer's last, partial line when there is
            // nothing else.
            upto = if pos >= t & !63 { t } else { t & !63 };
        }
        if pos < upto {
            self.empty = 0;
            return Window::Upto(upto);
        }
        self.empty += 1;
        if self.empty < STREAMING_EMPTY_POLLS {
            return Window::Empty;
        }
        self.on = false;
        self.empty = 0;
        Window::Headers
    }

    /// A frame ends past the window's limit after `delivered` frames: `None`
    /// to stop here (the next poll looks at `tail` again), or, when nothing
    /// was handed over yet, the limit to read it up to (`tail` as seen).
    #[inline(always)]
    pub(crate) fn past_limit(&mut self, delivered: usize) -> Option<u64> {
        if delivered > 0 {
            self.at_limit = true;
            None
        } else {
            Some(self.tail_seen)
        }
    }

    /// After a poll that handed over `delivered` frames.
    #[inline(always)]
    pub(crate) fn end(&mut self, delivered: usize) {
        if delivered >= STREAMING_FRAMES {
            self.on = true;
            self.single = 0;
        } else if delivered == 1 && self.on {
            // One frame a poll, again and again: a round trip, not a stream.
            self.single += 1;
            if self.single >= STREAMING_SINGLE_POLLS {
                self.on = false;
                self.single = 0;
            }
        } else if delivered > 1 {
            self.single = 0;
        }
    }
}
