//! Driver tests (filled below).
