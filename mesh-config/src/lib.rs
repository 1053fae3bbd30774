//! Configuration: see README.
