//! weft-rebalance: how close to saturation each core really is, and which
//! task moves would even the load out.
//!
//! A busy-spinning agent always looks 100 % busy to the OS; weft's own
//! accounting (busy and idle time per agent, time per task, in each node's
//! counters file) says how much of that was work. [`plan`] decides moves
//! from those figures without any I/O, so it is tested exhaustively.
//! [`collect`] samples the counters files of every live node for a window;
//! [`assess`] turns windows into the planner's input and the report;
//! [`apply`] carries a plan out through each node's control ring.
//! [`prometheus`] builds the same model for every host of a fleet from a
//! Prometheus server's range queries over what `weft-stat serve` exports.

pub mod apply;
pub mod assess;
pub mod collect;
pub mod plan;
pub mod prometheus;
pub mod time;
