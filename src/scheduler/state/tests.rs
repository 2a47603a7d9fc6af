//! State transition tests.
